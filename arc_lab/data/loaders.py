"""Loaders for the science multiple-choice sets (ARC-C/E, OpenBookQA, SciQ, builtin) and CAMEL-AI prose.

Which sets exist, how their rows parse and where their Hub copies are is the table in
:mod:`arc_lab.data.registry`; this module reads it at call time.

Every loader returns :class:`~arc_lab.data.records.MCItem` records, whatever the source:

* a local directory laid out like ``../shared/data``: ``<data_dir>/<dataset>/<split>.jsonl``, where the
  validation file may be named ``dev.jsonl``, ``valid.jsonl`` or ``validation.jsonl``;
* the Hugging Face Hub (``datasets.load_dataset``), only when asked for with ``hub=True``.

Both row schemas are accepted in either place:

* release (ARC-V1-Feb2018, OpenBookQA-V1-Sep2018): ``id``, ``question{stem, choices[{text, label}]}``,
  ``answerKey``;
* Hub: ARC ``id``, ``question`` (str), ``choices{text: [...], label: [...]}``, ``answerKey``; OpenBookQA the
  same with ``question_stem``;
* SciQ (release and Hub alike): ``question``, ``distractor1..3``, ``correct_answer``, ``support``.

A malformed row fails loudly with the file, the 1-based line number and the field, e.g.
``arc_challenge/train.jsonl line 17: field 'answerKey' = 'F' is not one of the labels ['A', 'B', 'C', 'D']``;
bytes that are not UTF-8 fail naming the line and byte offset.

**Duplicates.** A row repeats an earlier one when it has the same ``id`` (SciQ, which has no ids: the same
content in every field; its index-based ids are unique by construction, and the 70 question strings that
SciQ train repeats with different choices are different rows). ``duplicates="error"`` (the default, used for
evaluation splits: a question must not be scored twice) fails naming the file and lines.
``duplicates="drop"`` (training data, few-shot pools) drops rows *identical* to an earlier row with a warning
giving the count and lines; a repeated id whose row differs fails naming both lines, because the id no
longer says which question it is and the two rows may teach contradictory answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from arc_lab.data.records import SPLITS, MCItem
from arc_lab.data.registry import CAMEL_SUBJECTS, DATASETS, DataSet, get_dataset

log = logging.getLogger(__name__)

#: Accepted split names -> canonical name.
SPLIT_ALIASES = {
    "train": "train",
    "dev": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}
#: File stems a canonical split may be stored under.
SPLIT_FILES = {"train": ("train",), "validation": ("validation", "dev", "valid"), "test": ("test",)}

DATA_DIR_ENV = "ARC_LAB_DATA_DIR"
_LOCAL_HINT = (
    f"set ${DATA_DIR_ENV} or data.data_dir to a folder laid out like ../shared/data "
    f"(<data_dir>/<dataset>/<split>.jsonl)"
)
_WHERE_HINT = f"{_LOCAL_HINT}, or enable the Hub with data.hub=true"


class DataError(ValueError):
    """A data row or file is malformed; the message names the file, line and field."""


class DataSourceError(RuntimeError):
    """The data could not be found or fetched; the message says where it looked and what to set."""


# ------------------------------------------------------------------------------------------- names
def canonical_split(split: str) -> str:
    """Map a split name or alias (``dev``/``valid``/``validation``) to ``train``/``validation``/``test``.

    Raises:
        ValueError: for an unknown name, listing the accepted ones.
    """
    if split not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}: expected one of {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[split]


def _dataset_split(dataset: str, split: str) -> tuple[DataSet, str]:
    """The registry entry of ``dataset`` and the canonical name of ``split``, checked to be one it has.

    Raises:
        ValueError: an unknown dataset or split, listing the accepted names.
    """
    spec = get_dataset(dataset)
    split = canonical_split(split)
    if split not in spec.splits:
        raise ValueError(f"{dataset} has no {split} split: its splits are {list(spec.splits)}")
    return spec, split


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The explicit ``data_dir``, else ``$ARC_LAB_DATA_DIR``, else None."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir)
    env = os.environ.get(DATA_DIR_ENV, "")
    return Path(env) if env else None


def split_file(data_dir: str | Path, dataset: str, split: str) -> Path:
    """The one ``<data_dir>/<dataset>/<alias>.jsonl`` file holding ``split``.

    Raises:
        DataSourceError: if no file (or more than one alias) exists for the split.
    """
    split = canonical_split(split)
    folder = Path(data_dir) / dataset
    found = [folder / f"{stem}.jsonl" for stem in SPLIT_FILES[split] if (folder / f"{stem}.jsonl").is_file()]
    if len(found) > 1:
        raise DataSourceError(
            f"{dataset}/{split}: several files hold this split ({[p.name for p in found]}); keep one"
        )
    if not found:
        tried = [f"{stem}.jsonl" for stem in SPLIT_FILES[split]]
        raise DataSourceError(f"{dataset}/{split}: no file {' or '.join(tried)} in {folder}; {_WHERE_HINT}")
    return found[0]


def split_location(dataset: str, split: str, data_dir: str | Path | None = None, hub: bool = False) -> str:
    """Where :func:`load_mc` reads a split from, for messages: the file, the built-in set or the Hub."""
    spec = get_dataset(dataset)
    if spec.generated:
        return f"the built-in set's {canonical_split(split)} split (arc_lab.data.builtin)"
    root = resolve_data_dir(data_dir)
    if root is not None:
        try:
            return str(split_file(root, dataset, split))
        except DataSourceError:
            return str(root / dataset)
    if hub and spec.hub_path:
        return f"the Hub dataset {spec.hub_label} ({canonical_split(split)})"
    return f"{dataset}/{canonical_split(split)} (no data folder configured)"


# ----------------------------------------------------------------------------------------- reading
def read_jsonl(path: str | Path, where: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON-lines file.

    Splits only on ``"\\n"``: ``str.splitlines`` would also split on U+2028, which occurs in SciQ text.

    Args:
        path: the file.
        where: how errors name the file (default: the path).

    Raises:
        DataError: on bytes that are not UTF-8, invalid JSON or a line that is not an object, naming file
            and line.
    """
    where = where or str(path)
    data = Path(path).read_bytes()
    if str(path).endswith(".gz"):  # committed study samples are gzipped
        import gzip

        data = gzip.decompress(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{where} line {bad_line}: not UTF-8: byte {data[e.start : e.start + 1]!r} at byte offset {e.start} "
            f"of the file (byte {column} of the line) is {e.reason}; re-save the file as UTF-8"
        ) from None
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} line {n}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where} line {n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _field(row: dict[str, Any], name: str, where: str, kind: type = str, label: str | None = None) -> Any:
    """``row[name]``, checked to exist and be of ``kind`` (strings must be non-empty)."""
    label = label or name
    if name not in row:
        raise DataError(f"{where}: field {label!r} is missing (keys: {sorted(row)})")
    value = row[name]
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field {label!r} = {value!r} is not a non-empty {kind.__name__}")
    return value


# ----------------------------------------------------------------------------------------- parsing
def _choices_release(question: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """Texts and labels from the release layout ``question.choices[{text, label}]``."""
    choices = _field(question, "choices", where, list, "question.choices")
    texts, labels = [], []
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise DataError(f"{where}: field 'question.choices[{i}]' = {choice!r} is not an object")
        texts.append(_field(choice, "text", where, str, f"question.choices[{i}].text"))
        labels.append(_field(choice, "label", where, str, f"question.choices[{i}].label"))
    return texts, labels


def _choices_hub(row: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """Texts and labels from the Hub layout ``choices{text: [...], label: [...]}``."""
    choices = _field(row, "choices", where, dict)
    texts = _field(choices, "text", where, list, "choices.text")
    labels = _field(choices, "label", where, list, "choices.label")
    if len(texts) != len(labels):
        raise DataError(f"{where}: field 'choices' has {len(texts)} texts but {len(labels)} labels")
    for name, values in (("text", texts), ("label", labels)):
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v.strip():
                raise DataError(f"{where}: field 'choices.{name}[{i}]' = {v!r} is not a non-empty str")
    return texts, labels


def _question_and_choices(row: dict[str, Any], where: str) -> tuple[str, list[str], list[str]]:
    """Dispatch on the row schema: release (``question`` is an object) or Hub (ARC / OpenBookQA)."""
    question = row.get("question")
    if isinstance(question, dict):
        stem = _field(question, "stem", where, str, "question.stem")
        return stem, *_choices_release(question, where)
    if "question_stem" in row:
        return _field(row, "question_stem", where), *_choices_hub(row, where)
    if isinstance(question, str):
        return _field(row, "question", where), *_choices_hub(row, where)
    raise DataError(
        f"{where}: field 'question' = {question!r} is neither an object (release schema) nor a "
        f"string (Hub schema), and there is no 'question_stem' (keys: {sorted(row)})"
    )


def parse_choice_row(
    row: dict[str, Any], *, source: str, split: str, where: str, index: int | None = None
) -> MCItem:
    """One ARC / OpenBookQA row (release or Hub schema) as an :class:`MCItem` (``index`` is unused: the id
    comes from the row).

    Gold is ``labels.index(answerKey.strip())`` (OpenBookQA answer keys may carry whitespace).

    Raises:
        DataError: naming ``where`` and the offending field.
    """
    item_id = _field(row, "id", where)
    stem, texts, labels = _question_and_choices(row, where)
    if len(texts) < 2:
        raise DataError(f"{where}: field 'choices' has {len(texts)} choice(s); at least 2 are needed")
    if len(set(labels)) != len(labels):
        raise DataError(f"{where}: field 'choices.label' = {labels} has repeated labels")
    key = _field(row, "answerKey", where)
    if key.strip() not in labels:
        raise DataError(f"{where}: field 'answerKey' = {key!r} is not one of the labels {labels}")
    return MCItem(
        id=item_id,
        question=stem,
        choices=tuple(texts),
        gold=labels.index(key.strip()),
        source=source,
        split=split,
        labels=tuple(labels),
    )


def parse_sciq_row(
    row: dict[str, Any], *, split: str, index: int, where: str, source: str = "sciq"
) -> MCItem:
    """One SciQ row as an :class:`MCItem`: choices ``[distractor1, distractor2, distractor3, correct]``.

    The order is lm-eval's, so gold is always 3. SciQ has no ids: the id is ``<source>-<split>-<index>``
    (0-based row index in the split; ``sciq-test-0``). ``support`` may be empty but must be present.
    ``source`` is the data set's name (any data set registered with ``loader="sciq"``).

    Raises:
        DataError: naming ``where`` and the offending field.
    """
    question = _field(row, "question", where)
    choices = tuple(
        _field(row, name, where) for name in ("distractor1", "distractor2", "distractor3", "correct_answer")
    )
    if "support" not in row:
        raise DataError(f"{where}: field 'support' is missing (keys: {sorted(row)})")
    support = row["support"]
    if support is None:  # the Hub's parquet may hold null for an empty paragraph
        support = ""
    if not isinstance(support, str):
        raise DataError(f"{where}: field 'support' = {support!r} is not a str")
    return MCItem(
        id=f"{source}-{split}-{index}",
        question=question,
        choices=choices,
        gold=3,
        source=source,
        split=split,
        support=support,
    )


DUPLICATES = ("error", "drop")


def parse_rows(
    rows: Iterable[tuple[str, dict[str, Any]]], dataset: str, split: str, duplicates: str = "error"
) -> list[MCItem]:
    """Parse ``(where, row)`` pairs of one dataset split, in order, handling repeated rows per ``duplicates``.

    Args:
        rows: ``(where, row)``; ``where`` names the file and line (``arc_easy/test.jsonl line 3``).
        dataset: dataset name (its registry entry's row parser reads each row).
        split: canonical split name.
        duplicates: ``error`` or ``drop`` (see the module docstring).

    Raises:
        DataError: a malformed row, or a duplicate the policy refuses (file and lines named).
    """
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates={duplicates!r}: expected one of {DUPLICATES}")
    parse = get_dataset(dataset).row_parser()
    parsed = [
        (where, parse(row, source=dataset, split=split, index=index, where=where))
        for index, (where, row) in enumerate(rows)
    ]
    return _handle_duplicates(parsed, dataset, split, duplicates)


def _content(item: MCItem) -> tuple:
    """Everything of an item but its id (SciQ's id is its row index, so the id says nothing there)."""
    return (item.question, item.choices, item.gold, item.labels, item.support)


def _has_ids(dataset: str) -> bool:
    """Whether rows carry their own ids (the entry's ``has_ids``); rows without are told apart by content."""
    return get_dataset(dataset).has_ids


def _handle_duplicates(
    parsed: list[tuple[str, MCItem]], dataset: str, split: str, policy: str
) -> list[MCItem]:
    """Apply the duplicates ``policy`` to parsed ``(where, item)`` rows; return the items kept."""
    has_ids = _has_ids(dataset)
    first: dict[Any, tuple[str, MCItem]] = {}  # duplicate key -> (where, item) of its first row
    repeats: list[tuple[str, str]] = []  # (where of the first row, where of the repeat)
    keep: list[MCItem] = []
    for where, item in parsed:
        key = item.id if has_ids else _content(item)
        if key not in first:
            first[key] = (where, item)
            keep.append(item)
            continue
        where0, item0 = first[key]
        if policy == "error":
            what = f"duplicate id {item.id!r}" if has_ids else "the same row"
            raise DataError(
                f"{where}: {what} as {where0}: an evaluation split must not score a question twice; "
                f"remove the repeated row ({_count_repeats(parsed, dataset)} repeated rows in this file)"
            )
        if _content(item) != _content(item0):
            raise DataError(
                f"{where}: id {item.id!r} was already used by {where0} for a different row: the id no "
                f"longer names one question; give one of them a new id or remove it"
            )
        repeats.append((where0, where))
    if repeats:
        shown = ", ".join(f"{w} repeats {' '.join(f.split(' ')[-2:])}" for f, w in repeats[:5])
        log.warning(
            "%s/%s: dropped %d row(s) identical to an earlier row%s: %s%s",
            dataset,
            split,
            len(repeats),
            " with the same id" if has_ids else "",
            shown,
            " ..." if len(repeats) > 5 else "",
        )
    return keep


def _count_repeats(parsed: list[tuple[str, MCItem]], dataset: str) -> int:
    has_ids = _has_ids(dataset)
    keys = [item.id if has_ids else _content(item) for _, item in parsed]
    return len(keys) - len(set(keys))


# ----------------------------------------------------------------------------- rows for lm-eval
#: Choice labels for items that carry none (generated sets).
LABELS = "ABCDEFGHIJ"


def _choice_hub_row(item: MCItem, question_key: str) -> dict[str, Any]:
    labels = list(item.labels) if item.labels else list(LABELS[: len(item.choices)])
    if len(labels) != len(item.choices):
        raise ValueError(
            f"{item.source} item {item.id!r}: {len(labels)} labels for {len(item.choices)} choices"
        )
    return {
        "id": item.id,
        question_key: item.question,
        "choices": {"text": list(item.choices), "label": labels},
        "answerKey": labels[item.gold],
    }


def arc_hub_row(item: MCItem) -> dict[str, Any]:
    """``item`` in the Hub ARC schema (``question``, ``choices{text, label}``, ``answerKey``), the row
    lm-eval's ``arc_easy.yaml`` reads; :func:`parse_choice_row` reads it back."""
    return _choice_hub_row(item, "question")


def obqa_hub_row(item: MCItem) -> dict[str, Any]:
    """``item`` in the Hub OpenBookQA schema (``question_stem`` instead of ``question``)."""
    return _choice_hub_row(item, "question_stem")


def sciq_hub_row(item: MCItem) -> dict[str, Any]:
    """``item`` in the SciQ schema (``distractor1..3``, ``correct_answer``, ``support``); the gold choice must
    be last, as :func:`parse_sciq_row` and lm-eval's SciQ YAML order them."""
    if len(item.choices) != 4 or item.gold != 3:
        raise ValueError(
            f"sciq item {item.id!r}: expected 4 choices with gold 3 (lm-eval's SciQ order), got "
            f"{len(item.choices)} choices, gold {item.gold}"
        )
    d1, d2, d3, correct = item.choices
    return {
        "question": item.question,
        "distractor1": d1,
        "distractor2": d2,
        "distractor3": d3,
        "correct_answer": correct,
        "support": item.support,
    }


# ------------------------------------------------------------------------------------------ public
def load_mc(
    dataset: str,
    split: str,
    data_dir: str | Path | None = None,
    hub: bool = False,
    duplicates: str = "error",
) -> list[MCItem]:
    """Load one split of a multiple-choice dataset as :class:`MCItem` records, in file order.

    Args:
        dataset: a name in :data:`arc_lab.data.registry.DATASETS` (``arc_challenge``, ``arc_easy``,
            ``openbookqa``, ``sciq``, ``builtin``); its entry says how the rows parse and where the Hub copy is.
        split: ``train``, ``validation`` (aliases ``dev``, ``valid``) or ``test``; one the data set has.
        data_dir: a folder laid out like ``../shared/data``; default ``$ARC_LAB_DATA_DIR``.
        hub: read the Hugging Face Hub when no local folder is configured.
        duplicates: ``error`` (evaluation splits) or ``drop`` (training data): see the module docstring.

    Raises:
        ValueError: unknown dataset or split (or a split the dataset does not have).
        DataSourceError: no data folder and no Hub, a missing file, or a failed Hub download.
        DataError: a malformed row (file, line and field are named), a duplicate ``duplicates`` refuses.
    """
    spec, split = _dataset_split(dataset, split)
    if spec.generated:
        from arc_lab.data.builtin import generated_items

        return generated_items(spec.name, split)
    root = resolve_data_dir(data_dir)
    if root is not None:
        path = split_file(root, dataset, split)
        where = f"{dataset}/{path.name}"
        rows = ((f"{where} line {n}", row) for n, row in read_jsonl(path, where))
        return parse_rows(rows, dataset, split, duplicates)
    if hub and spec.hub_path:
        return _load_hub(spec, split, duplicates)
    if hub:
        raise DataSourceError(f"{dataset}/{split}: {dataset} has no Hub copy (no hub_path); {_LOCAL_HINT}")
    raise DataSourceError(f"{dataset}/{split}: no data folder is configured; {_WHERE_HINT}")


def _load_hub(spec: DataSet, split: str, duplicates: str = "error") -> list[MCItem]:
    """Read a split from the Hub; any failure becomes a :class:`DataSourceError` naming the dataset."""
    dataset = spec.name
    try:
        import datasets

        rows = datasets.load_dataset(spec.hub_path, spec.hub_config, split=split)
    except Exception as e:  # network, offline mode, missing repo: all mean "not available here"
        raise DataSourceError(
            f"{dataset}/{split}: could not read {spec.hub_label} from the Hub ({type(e).__name__}: {e}); "
            f"if offline, {_LOCAL_HINT}"
        ) from e
    label = f"hub {spec.hub_label} {split}"
    return parse_rows(
        ((f"{label} row {i}", dict(row)) for i, row in enumerate(rows)), dataset, split, duplicates
    )


def records_fingerprint(items: Iterable[MCItem], *, origin: bool = True) -> str:
    """Short sha256 over the records' canonical JSON: one line ``[id, question, choices, gold, source,
    split, labels, support]`` per item.

    Two callers, two values, kept apart because both are already stored:

    * ``origin=True`` (with ``source`` and ``split``): :func:`dataset_fingerprint` of data that has no file
      (builtin, the Hub). It enters the stage and eval cache keys and ``metrics.json``.
    * ``origin=False`` (the line without ``source`` and ``split``): items handed to
      :func:`arc_lab.eval.runner.run_eval` in memory (``task_items``: tests, benchmarks), whose
      ``metrics.json`` records it as the task's ``dataset_fingerprint``.

    Args:
        items: the records, in order.
        origin: include each record's ``source`` and ``split``.
    """
    h = hashlib.sha256()
    for item in items:
        line: list[Any] = [item.id, item.question, list(item.choices), item.gold]
        if origin:
            line += [item.source, item.split]
        line += [list(item.labels), item.support]
        h.update(json.dumps(line, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def dataset_fingerprint(
    dataset: str, split: str, data_dir: str | Path | None = None, hub: bool = False
) -> str:
    """Short sha256 identifying the data a split was read from (for run provenance and caches).

    Local files: the sha256 of the file's bytes (memoised by the file's stat, see :mod:`arc_lab.run.manifest`).
    Builtin: the sha256 of the generated records. The Hub: the sha256 of the records, so the split is
    downloaded (or read from the ``datasets`` cache) first -- a Hub dataset has no content fingerprint
    before it is fetched.

    Raises:
        Same as :func:`load_mc`.
    """
    from arc_lab.run.manifest import file_digest

    spec, split = _dataset_split(dataset, split)
    root = resolve_data_dir(data_dir)
    if spec.generated or root is None:
        return records_fingerprint(load_mc(dataset, split, data_dir, hub=hub))
    return file_digest(split_file(root, dataset, split))[:16]


# ------------------------------------------------------------------------------------------- CAMEL
def load_camel(subject: str, data_dir: str | Path | None = None, hub: bool = False) -> list[str]:
    """Answer texts (``message_2``) of the CAMEL-AI ``biology``/``chemistry``/``physics`` sets.

    Local layout: ``<data_dir>/camel_<subject>/*.json`` (one object per file) and/or ``*.jsonl`` (one object a
    line), read in file-name order. The Hub repos ``camel-ai/<subject>`` hold one zip of JSON files.

    Raises:
        ValueError: unknown subject.
        DataSourceError: no folder / no files / Hub failure.
        DataError: a record without a non-empty string ``message_2``.
    """
    if subject not in CAMEL_SUBJECTS:
        raise ValueError(f"unknown CAMEL subject {subject!r}: expected one of {list(CAMEL_SUBJECTS)}")
    root = resolve_data_dir(data_dir)
    if root is not None:
        return _camel_local(root / f"camel_{subject}")
    if hub:
        return read_camel_zip(_camel_hub_zip(subject))
    raise DataSourceError(f"camel_{subject}: no data folder is configured; {_WHERE_HINT}")


def camel_fingerprint(subject: str, data_dir: str | Path | None = None, hub: bool = False) -> str:
    """Short sha256 identifying the files :func:`load_camel` reads: the names and contents of the local
    ``camel_<subject>/*.json[l]`` files, or the bytes of the Hub zip (downloaded first).

    Raises:
        Same as :func:`load_camel`.
    """
    from arc_lab.run.manifest import file_digest

    if subject not in CAMEL_SUBJECTS:
        raise ValueError(f"unknown CAMEL subject {subject!r}: expected one of {list(CAMEL_SUBJECTS)}")
    root = resolve_data_dir(data_dir)
    if root is not None:
        files = _camel_files(root / f"camel_{subject}")
        h = hashlib.sha256()
        for path in files:
            h.update(f"{path.name}\0{file_digest(path)}\n".encode())
        return h.hexdigest()[:16]
    if hub:
        return file_digest(_camel_hub_zip(subject))[:16]
    raise DataSourceError(f"camel_{subject}: no data folder is configured; {_WHERE_HINT}")


def _camel_answer(obj: Any, where: str) -> str:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return _field(obj, "message_2", where)


def _camel_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*") if p.suffix in (".json", ".jsonl")) if folder.is_dir() else []
    if not files:
        raise DataSourceError(f"{folder.name}: no *.json or *.jsonl files in {folder}; {_WHERE_HINT}")
    return files


def _camel_local(folder: Path) -> list[str]:
    texts = []
    for path in _camel_files(folder):
        where = f"{folder.name}/{path.name}"
        if path.suffix == ".jsonl":
            texts += [_camel_answer(row, f"{where} line {n}") for n, row in read_jsonl(path, where)]
        else:
            texts.append(_camel_answer(_json_file(path.read_bytes(), where), where))
    return texts


def _json_file(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{where}: invalid JSON ({e})") from None


def read_camel_zip(path: str | Path) -> list[str]:
    """``message_2`` of every ``*.json`` member of a CAMEL zip, in member-name order."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".json"))
        if not names:
            raise DataError(f"{Path(path).name}: the zip holds no .json files")
        return [
            _camel_answer(_json_file(zf.read(n), f"{Path(path).name}:{n}"), f"{Path(path).name}:{n}")
            for n in names
        ]


def _camel_hub_zip(subject: str) -> Path:
    repo = f"camel-ai/{subject}"
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo, filename=f"{subject}.zip", repo_type="dataset"))
    except Exception as e:  # network, offline mode, renamed file
        raise DataSourceError(
            f"camel_{subject}: could not download {repo}/{subject}.zip from the Hub "
            f"({type(e).__name__}: {e}); put the JSON files in "
            f"<data_dir>/camel_{subject}/ and set ${DATA_DIR_ENV} or data.data_dir"
        ) from e


__all__ = [
    "CAMEL_SUBJECTS",
    "DATASETS",
    "SPLITS",
    "SPLIT_ALIASES",
    "DataError",
    "DataSourceError",
    "camel_fingerprint",
    "canonical_split",
    "dataset_fingerprint",
    "load_camel",
    "load_mc",
    "parse_choice_row",
    "parse_sciq_row",
    "read_camel_zip",
    "read_jsonl",
    "records_fingerprint",
    "resolve_data_dir",
    "split_file",
]
