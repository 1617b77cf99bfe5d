"""The readers, fingerprints and locations of the CPT prose sources that
:data:`arc_lab.data.registry.PROSE_SOURCES` names (each called as ``f(data_dir, hub, *args)``).

The fingerprints are what the stage cache key holds for a CPT stage's data (:func:`prose_fingerprints`);
they must stay as they are for existing cache entries to stay valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from arc_lab.data.loaders import camel_fingerprint as _camel_fp
from arc_lab.data.loaders import dataset_fingerprint, load_camel, load_mc, resolve_data_dir, split_location
from arc_lab.data.registry import prose_source
from arc_lab.run.runinfo import config_hash

DataDir = str | Path | None


def _dedupe(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t for t in texts if t))


# ------------------------------------------------------------------------------------------ built-in
def builtin_texts(data_dir: DataDir = None, hub: bool = False) -> list[str]:
    """The built-in set's prose: every fact of every split (see :mod:`arc_lab.data.builtin`)."""
    from arc_lab.data.builtin import builtin_prose

    return builtin_prose()


def builtin_fingerprint(data_dir: DataDir = None, hub: bool = False) -> str:
    return "generated:" + config_hash(builtin_texts(), n=16)


def builtin_location(data_dir: DataDir = None, hub: bool = False) -> str:
    return "the built-in prose (arc_lab.data.builtin)"


# ------------------------------------------------------------------------------------------ SciQ
def sciq_texts(data_dir: DataDir = None, hub: bool = False) -> list[str]:
    """SciQ ``support`` paragraphs of the **train** split: stripped, non-empty, deduplicated in order."""
    return _dedupe(
        item.support.strip() for item in load_mc("sciq", "train", data_dir, hub=hub, duplicates="drop")
    )


def sciq_fingerprint(data_dir: DataDir = None, hub: bool = False) -> str:
    return dataset_fingerprint("sciq", "train", data_dir, hub=hub)


def sciq_location(data_dir: DataDir = None, hub: bool = False) -> str:
    return split_location("sciq", "train", data_dir, hub)


# ------------------------------------------------------------------------------------------ CAMEL-AI
def camel_texts(data_dir: DataDir = None, hub: bool = False, *subjects: str) -> list[str]:
    """CAMEL-AI answer texts of the given subjects: stripped, non-empty, deduplicated in order."""
    return _dedupe(text.strip() for subject in subjects for text in load_camel(subject, data_dir, hub=hub))


def camel_fingerprint(data_dir: DataDir, hub: bool, subject: str) -> str:
    return _camel_fp(subject, data_dir, hub=hub)


def camel_location(data_dir: DataDir, hub: bool, subject: str) -> str:
    root = resolve_data_dir(data_dir)
    source = f"camel_{subject}"
    return str(root / source) if root is not None else f"{source} ({'the Hub' if hub else 'no data folder'})"


# ------------------------------------------------------------------------------------------ by name
def prose_texts(sources: Sequence[str], data_dir: DataDir = None, hub: bool = False) -> list[str]:
    """The documents of several sources, in the order given.

    Raises:
        ValueError: an unknown source name (the message lists the registered sources).
    """
    entries = [prose_source(s) for s in sources]  # every name checked before any reading
    texts: list[str] = []
    for entry in entries:
        texts += entry.call("reader", data_dir, hub)
    return texts


def prose_fingerprints(sources: Sequence[str], data_dir: DataDir = None, hub: bool = False) -> dict[str, str]:
    """``{source: content fingerprint}``: the data part of a CPT stage's cache key."""
    return {s: prose_source(s).call("fingerprint", data_dir, hub) for s in sources}


def prose_location(source: str, data_dir: DataDir = None, hub: bool = False) -> str:
    """Where a source's documents come from, for messages."""
    return prose_source(source).call("location", data_dir, hub)
