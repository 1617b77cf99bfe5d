"""What a training stage reads, from flat arguments: CPT documents, training questions, decontamination,
and the content fingerprints of all of it (the stage-cache key).

:mod:`arc_lab.build` calls these with the fields of the validated ``data`` config; nothing here reads a
config object.
"""

from __future__ import annotations

import random
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
from arc_lab.runinfo import config_hash


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


def decontaminate(items: list[MCItem], *, data_dir: str | None, hub: bool, mode: str) -> dict[str, Any]:
    """Apply ``data.decontaminate`` (drop | refuse | off) against ARC-Challenge test; see
    :func:`arc_lab.data.builders.decontaminate_items`. Drops from ``items`` in place.

    Training only on the built-in set cannot contain ARC questions, so there the check runs when the
    ARC-Challenge test file is available and is reported as skipped (loudly) when it is not.

    Returns:
        What ``data.json`` records: the mode, how many questions were compared and removed, and the
        removed ids (``source/split/id``).
    """
    forbidden: list[MCItem] = []
    if mode != "off":
        builtin_only = all(item.source == "builtin" for item in items)
        forbidden = arc_challenge_test_items(data_dir, hub=hub, required=not builtin_only)
    items[:], removed = decontaminate_items(items, forbidden, mode=mode)
    return {
        "mode": mode,
        "against": "arc_challenge/test",
        "evaluation_questions": len(forbidden),
        "removed": len(removed),
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


def question_inputs(sources: list[str], *, data_dir: str | None, hub: bool) -> dict[str, str]:
    """Content fingerprints of everything a question-trained stage reads, for the stage cache key.

    Local files: the sha256 of their bytes; generated data (``builtin``, ``builtin_prose``): the sha256 of
    what the generator yields; the Hub: the sha256 of the records, downloaded first (the Hub offers no
    content fingerprint before that). The decontamination set enters as the fingerprint of its normalised
    questions, the only thing the check compares (its answer keys do not change a stage).

    Raises:
        DataSourceError, DataError: as building the examples would, before any work.
    """
    out = {f"{s}/train": dataset_fingerprint(s, "train", data_dir, hub=hub) for s in sources}
    try:
        questions = sorted(
            {normalize_question(i.question) for i in load_mc("arc_challenge", "test", data_dir, hub)}
        )
        out["decontamination/arc_challenge/test"] = config_hash(questions, n=16)
    except DataSourceError:
        if any(s != "builtin" for s in sources):
            raise
        out["decontamination/arc_challenge/test"] = "unavailable"
    return out
