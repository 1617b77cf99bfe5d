"""Data: the MCItem record, loaders (ARC-C/E, OpenBookQA, SciQ, CAMEL, builtin), builders (CPT, pairs, lists).

``arc_lab.data.builders`` imports torch, so it is not imported here; import it directly.
"""

from __future__ import annotations

from arc_lab.data.builtin import builtin_facts, builtin_items, builtin_prose
from arc_lab.data.loaders import (
    DataError,
    DataSourceError,
    canonical_split,
    dataset_fingerprint,
    load_camel,
    load_mc,
)
from arc_lab.data.records import SPLITS, MCItem

__all__ = [
    "SPLITS",
    "DataError",
    "DataSourceError",
    "MCItem",
    "builtin_facts",
    "builtin_items",
    "builtin_prose",
    "canonical_split",
    "dataset_fingerprint",
    "load_camel",
    "load_mc",
]
