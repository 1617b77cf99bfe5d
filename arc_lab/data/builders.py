"""Turn loaded data into training inputs: packed CPT blocks, preference pairs, ranked lists, SFT examples.

All question-answer examples use lm-eval's ARC layout (``"Question: {q}\\nAnswer:"``, from
:func:`arc_lab.data.registry.question_prompt`, + ``" " + choice``) for every source, OpenBookQA and SciQ
included, so that training optimises the strings the ARC harness scores.

Decontamination is explicit: :func:`decontaminate_items` finds training questions that equal an evaluation
question after normalisation and, per ``data.decontaminate``, drops them (``drop``, the default), refuses
to train (``refuse``) or is not run at all (``off``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from arc_lab.data.loaders import DataSourceError, load_mc
from arc_lab.data.records import MCItem
from arc_lab.data.registry import CAMEL_SUBJECTS, DECONTAMINATE_MODES, question_prompt

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- CPT
def sciq_support_texts(data_dir: str | Path | None = None, hub: bool = False) -> list[str]:
    """SciQ ``support`` paragraphs of the **train** split (:func:`arc_lab.data.prose.sciq_texts`)."""
    from arc_lab.data.prose import sciq_texts

    return sciq_texts(data_dir, hub)


def camel_texts(
    subjects: Sequence[str] = CAMEL_SUBJECTS, data_dir: str | Path | None = None, hub: bool = False
) -> list[str]:
    """CAMEL-AI answer texts of the given subjects (:func:`arc_lab.data.prose.camel_texts`)."""
    from arc_lab.data.prose import camel_texts as _camel

    return _camel(data_dir, hub, *subjects)


def builtin_texts() -> list[str]:
    """The builtin set's prose: every fact of every split (see :mod:`arc_lab.data.builtin`)."""
    from arc_lab.data.prose import builtin_texts as _builtin

    return _builtin()


def cpt_texts(sources: Sequence[str], data_dir: str | Path | None = None, hub: bool = False) -> list[str]:
    """Concatenate the prose of several sources, in the order given: each read by its entry in
    :data:`arc_lab.data.registry.PROSE_SOURCES` (:func:`arc_lab.data.prose.prose_texts`).

    Raises:
        ValueError: an unknown source name (the message lists the registered sources).
    """
    from arc_lab.data.prose import prose_texts

    return prose_texts(sources, data_dir, hub)


def pack_blocks(texts: Sequence[str], tokenizer, seq_len: int = 4096, add_eos: bool = True) -> torch.Tensor:
    """Tokenise documents, join them into one stream and cut it into full blocks of ``seq_len`` tokens.

    Each text is encoded without special tokens; with ``add_eos`` an EOS id follows every document, so
    documents are separated inside a block. The tail that does not fill a block is dropped. The loss is
    taken on every token (the training loop handles that), so no labels are built here.

    Args:
        texts: the documents, in order.
        tokenizer: a Hugging Face tokenizer.
        seq_len: tokens per block.
        add_eos: append ``tokenizer.eos_token_id`` after each document.

    Returns:
        LongTensor (N, seq_len): ``blocks.flatten()`` equals the first ``N * seq_len`` stream tokens.

    Raises:
        ValueError: ``seq_len < 1``, no EOS id while ``add_eos``, or fewer tokens than one block.
    """
    if seq_len < 1:
        raise ValueError(f"pack_blocks: seq_len must be >= 1, got {seq_len}")
    eos = tokenizer.eos_token_id
    if add_eos and eos is None:
        raise ValueError("pack_blocks: add_eos=True but the tokenizer has no eos_token_id")
    stream: list[int] = []
    if texts:
        for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            stream += ids
            if add_eos:
                stream.append(eos)
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise ValueError(
            f"pack_blocks: {len(texts)} text(s) give {len(stream)} tokens, fewer than one block of "
            f"seq_len={seq_len}; lower seq_len or add text"
        )
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)  # (N, T)


# ------------------------------------------------------------------------------------------ examples
@dataclass(frozen=True)
class PreferencePair:
    """One (question, gold, distractor) comparison, as the strings lm-eval scores.

    Attributes:
        prompt: ``"Question: {q}\\nAnswer:"`` (no trailing space).
        chosen: ``" " + gold text``.
        rejected: ``" " + distractor text``.
        item_id: the source :class:`MCItem` id.
        source: the source dataset name.
    """

    prompt: str
    chosen: str
    rejected: str
    item_id: str
    source: str


@dataclass(frozen=True)
class ListExample:
    """One question with all its continuations, for listwise objectives.

    Attributes:
        prompt: ``"Question: {q}\\nAnswer:"``.
        choices: ``" " + text`` for every choice, in dataset order.
        gold: 0-based index of the correct continuation.
        item_id: the source :class:`MCItem` id.
        source: the source dataset name.
    """

    prompt: str
    choices: tuple[str, ...]
    gold: int
    item_id: str
    source: str


@dataclass(frozen=True)
class SFTExample:
    """One question with its correct answer, for supervised fine-tuning on the answer tokens.

    Attributes:
        prompt: ``"Question: {q}\\nAnswer:"``.
        completion: ``" " + gold text``.
        item_id: the source :class:`MCItem` id.
        source: the source dataset name.
    """

    prompt: str
    completion: str
    item_id: str
    source: str


def continuation(text: str) -> str:
    """A choice as lm-eval scores it: the target delimiter ``" "`` then the text."""
    return " " + text


def build_pairs(items: Iterable[MCItem], drop_identical: bool = True) -> list[PreferencePair]:
    """One pair per (question, distractor), distractors in choice order.

    Args:
        items: the questions.
        drop_identical: skip a distractor whose text equals the gold text (a few OpenBookQA/SciQ rows
            repeat the answer; such a pair carries no signal). The number dropped is logged.
    """
    pairs, dropped = [], 0
    for item in items:
        prompt, gold = question_prompt(item.question), item.choices[item.gold]
        for j, text in enumerate(item.choices):
            if j == item.gold:
                continue
            if drop_identical and text == gold:
                dropped += 1
                continue
            pairs.append(PreferencePair(prompt, continuation(gold), continuation(text), item.id, item.source))
    if dropped:
        log.warning("build_pairs: dropped %d pair(s) whose distractor text equals the gold text", dropped)
    return pairs


def build_lists(items: Iterable[MCItem]) -> list[ListExample]:
    """One :class:`ListExample` per question, all choices kept in dataset order."""
    return [
        ListExample(
            question_prompt(item.question),
            tuple(continuation(c) for c in item.choices),
            item.gold,
            item.id,
            item.source,
        )
        for item in items
    ]


def build_sft(items: Iterable[MCItem]) -> list[SFTExample]:
    """One :class:`SFTExample` (prompt, gold continuation) per question."""
    return [
        SFTExample(
            question_prompt(item.question), continuation(item.choices[item.gold]), item.id, item.source
        )
        for item in items
    ]


# ------------------------------------------------------------------------------------ decontamination
class ContaminationError(ValueError):
    """Training questions equal evaluation questions; the message lists them and the override."""


_PUNCT = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """Lowercase, replace punctuation by spaces, collapse whitespace, strip."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def find_contamination(
    train_items: Iterable[MCItem], forbidden_items: Iterable[MCItem]
) -> list[tuple[MCItem, MCItem]]:
    """Training questions that equal a forbidden (evaluation) question after :func:`normalize_question`.

    Returns:
        ``(training item, the forbidden item it equals)`` pairs, in training order (empty when clean).
    """
    forbidden = {normalize_question(item.question): item for item in forbidden_items}
    hits = ((item, forbidden.get(normalize_question(item.question))) for item in train_items)
    return [(item, match) for item, match in hits if match is not None]


def decontaminate_items(
    train_items: Sequence[MCItem], forbidden_items: Iterable[MCItem], mode: str = "drop"
) -> tuple[list[MCItem], list[MCItem]]:
    """Apply ``data.decontaminate`` to training questions.

    Args:
        train_items: what would be trained on.
        forbidden_items: what must not be trained on (e.g. ARC-Challenge test).
        mode: ``drop`` removes the offending training questions (logged with their count);
            ``refuse`` raises; ``off`` keeps everything without comparing (a loud warning).

    Returns:
        ``(kept, removed)``: the training items to use, and the ones removed (empty unless ``drop``).

    Raises:
        ContaminationError: an offender exists and ``mode`` is ``refuse``.
        ValueError: an unknown mode.
    """
    if mode not in DECONTAMINATE_MODES:
        raise ValueError(f"decontaminate mode {mode!r}: expected one of {list(DECONTAMINATE_MODES)}")
    if mode == "off":
        log.warning(
            "decontamination OFF (data.decontaminate=off): %d training question(s) were not compared with "
            "the evaluation questions; results are not comparable",
            len(train_items),
        )
        return list(train_items), []
    hits = find_contamination(train_items, forbidden_items)
    if not hits:
        return list(train_items), []
    lines = [f"  {o.id} ({o.source}/{o.split}) = {f.id}: {o.question!r}" for o, f in hits[:20]]
    more = f"\n  ... and {len(hits) - 20} more" if len(hits) > 20 else ""
    message = f"{len(hits)} training question(s) equal an evaluation question:\n" + "\n".join(lines) + more
    if mode == "refuse":
        raise ContaminationError(
            f"{message}\nPass data.decontaminate=drop to train without them, or data.decontaminate=off to "
            f"train on them anyway (results are then not comparable)."
        )
    removed_ids = {id(o) for o, _ in hits}
    removed = [o for o, _ in hits]
    by_source: dict[str, int] = {}
    for o in removed:
        by_source[o.source] = by_source.get(o.source, 0) + 1
    log.warning(
        "decontamination (data.decontaminate=drop): removed %d training question(s) equal to an evaluation "
        "question (%s):\n%s",
        len(removed),
        ", ".join(f"{n} {s}" for s, n in by_source.items()),
        "\n".join(lines) + more,
    )
    return [item for item in train_items if id(item) not in removed_ids], removed


def arc_challenge_test_items(
    data_dir: str | Path | None = None, hub: bool = False, required: bool = True
) -> list[MCItem]:
    """ARC-Challenge test, the set nothing may be trained on, for :func:`decontaminate_items`.

    Args:
        data_dir: local data folder (default ``$ARC_LAB_DATA_DIR``).
        hub: read the Hub when no local folder is configured.
        required: if False and the data cannot be found, log a WARNING and return ``[]``.

    Raises:
        DataSourceError: the data cannot be found and ``required`` is True.
    """
    try:
        return load_mc("arc_challenge", "test", data_dir, hub=hub)
    except DataSourceError as e:
        if required:
            raise
        log.warning(
            "decontamination against ARC-Challenge test was NOT possible (%s); training data is unchecked", e
        )
        return []
