"""What a training stage reads, from flat arguments: CPT documents, training questions, decontamination,
and the content fingerprints of all of it (the stage-cache key).

:mod:`arc_lab.run.build` calls these with the fields of the validated ``data`` config; nothing here reads a
config object.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from arc_lab.data.builders import (
    arc_challenge_test_items,
    cpt_texts,
    decontaminate_items,
    normalize_question,
)
from arc_lab.data.loaders import (
    DataError,
    DataSourceError,
    dataset_fingerprint,
    load_mc,
    split_location,
)
from arc_lab.data.records import MCItem
from arc_lab.data.registry import get_dataset
from arc_lab.run.runinfo import config_hash


def training_items(
    sources: list[str], *, data_dir: str | None, hub: bool, cap: int | None, seed: int
) -> list[MCItem]:
    """The *train* split of every source; ``cap`` keeps a seeded random subset per source."""
    items: list[MCItem] = []
    for source in sources:
        rows = load_mc(source, "train", data_dir, hub=hub, duplicates="drop")
        if not rows:
            raise DataError(
                f"{split_location(source, 'train', data_dir, hub)}: no training questions "
                f"(data.train_sources has {source!r}); fill the file or drop the source"
            )
        if cap is not None and len(rows) > cap:
            rows = random.Random(seed).sample(rows, cap)
        items.extend(rows)
    return items


#: The set every training run is checked against, whatever it evaluates: ARC-Challenge test, the benchmark
#: this project reports (``data.decontaminate``).
ALWAYS_AGAINST = ("arc_challenge", "test")


def decontamination_sets(eval_tasks: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(data set, split)`` pairs training questions are compared with: ARC-Challenge test, then the scored
    split of every eval task whose registry entry says ``decontaminate`` (lm-eval's ``should_decontaminate``;
    generated sets say no: their questions are disjoint by construction), in order, without repeats."""
    sets = [ALWAYS_AGAINST]
    for task in eval_tasks:
        spec = get_dataset(task, "eval task")
        pair = (task, spec.eval_split)
        if spec.decontaminate and pair not in sets:
            sets.append(pair)
    return sets


def _forbidden(
    pair: tuple[str, str], items: list[MCItem], *, data_dir: str | None, hub: bool
) -> list[MCItem]:
    """The questions of one decontamination set. ARC-Challenge test may be absent when training is on the
    built-in set only (which cannot hold ARC questions): then it is empty and the skip is logged loudly."""
    if pair == ALWAYS_AGAINST:
        builtin_only = all(item.source == "builtin" for item in items)
        return arc_challenge_test_items(data_dir, hub=hub, required=not builtin_only)
    return load_mc(pair[0], pair[1], data_dir, hub=hub)


def decontaminate(
    items: list[MCItem], *, data_dir: str | None, hub: bool, mode: str, eval_tasks: Sequence[str] = ()
) -> dict[str, Any]:
    """Apply ``data.decontaminate`` (drop | refuse | off) against every set of
    :func:`decontamination_sets`; see :func:`arc_lab.data.builders.decontaminate_items`. Drops from
    ``items`` in place.

    Training only on the built-in set cannot contain ARC questions, so there the ARC-Challenge check runs
    when its test file is available and is reported as skipped (loudly) when it is not. The scored split of
    an eval task is required: the run is about to evaluate it.

    Returns:
        What ``data.json`` records: the mode, the sets compared with and their question counts, how many
        questions were removed in all, per set (a question equal to one in two sets counts for both) and per
        training source, and the removed ids (``source/split/id``).
    """
    sets = decontamination_sets(eval_tasks)
    groups = (
        {"/".join(pair): _forbidden(pair, items, data_dir=data_dir, hub=hub) for pair in sets}
        if mode != "off"
        else {}
    )
    items[:], removed = decontaminate_items(items, [i for g in groups.values() for i in g], mode=mode)
    removed_questions = [normalize_question(o.question) for o in removed]
    per_set = {}
    for name, group in groups.items():
        questions = {normalize_question(i.question) for i in group}
        per_set[name] = {"questions": len(group), "removed": sum(q in questions for q in removed_questions)}
    return {
        "mode": mode,
        "against": ["/".join(pair) for pair in sets],
        "evaluation_questions": sum(len(g) for g in groups.values()),
        "per_set": per_set,
        "removed": len(removed),
        "removed_by_source": dict(Counter(o.source for o in removed)),
        "removed_ids": [f"{o.source}/{o.split}/{o.id}" for o in removed],
    }


def cpt_documents(sources: list[str], *, data_dir: str | None, hub: bool, cap: int | None) -> list[str]:
    """The CPT prose of every source, in order, the first ``cap`` documents kept (None = all)."""
    texts: list[str] = []
    for source in sources:  # one by one, to name a source that gives nothing
        got = cpt_texts([source], data_dir, hub=hub)
        if not got:
            raise DataError(
                f"{cpt_location(source, data_dir, hub)}: no documents for CPT "
                f"(data.cpt_sources has {source!r}); fill it or drop the source"
            )
        texts += got
    return texts[:cap] if cap is not None else texts


def cpt_location(source: str, data_dir: str | None, hub: bool) -> str:
    """Where a ``data.cpt_sources`` entry is read from, for messages (its registry entry says)."""
    from arc_lab.data.prose import prose_location

    return prose_location(source, data_dir, hub)


def cpt_inputs(sources: list[str], *, data_dir: str | None, hub: bool) -> dict[str, str]:
    """Content fingerprints of the CPT prose sources (see :func:`question_inputs`), each from its entry in
    :data:`arc_lab.data.registry.PROSE_SOURCES`; an unknown name fails, listing the registered ones."""
    from arc_lab.data.prose import prose_fingerprints

    return prose_fingerprints(sources, data_dir, hub)


def question_inputs(
    sources: list[str], *, data_dir: str | None, hub: bool, eval_tasks: Sequence[str] = ()
) -> dict[str, str]:
    """Content fingerprints of everything a question-trained stage reads, for the stage cache key.

    Local files: the sha256 of their bytes; generated data (``builtin``, ``builtin_prose``): the sha256 of
    what the generator yields; the Hub: the sha256 of the records, downloaded first (the Hub offers no
    content fingerprint before that). Each decontamination set (:func:`decontamination_sets`) enters as the
    fingerprint of its normalised questions, the only thing the check compares (its answer keys do not change
    a stage), under ``decontamination/<set>/<split>``: a run that evaluates only sets that need no check
    beyond ARC-Challenge has the key it always had.

    Raises:
        DataSourceError, DataError: as building the examples would, before any work.
    """
    out = {f"{s}/train": dataset_fingerprint(s, "train", data_dir, hub=hub) for s in sources}
    for task, split in decontamination_sets(eval_tasks):
        key = f"decontamination/{task}/{split}"
        try:
            questions = sorted({normalize_question(i.question) for i in load_mc(task, split, data_dir, hub)})
            out[key] = config_hash(questions, n=16)
        except DataSourceError:
            if (task, split) != ALWAYS_AGAINST or any(s != "builtin" for s in sources):
                raise
            out[key] = "unavailable"
    return out
