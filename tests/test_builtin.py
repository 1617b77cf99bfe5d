"""The builtin science set: size, shape, determinism, and a fact-level train/test split."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from arc_lab.data.builtin import builtin_facts, builtin_items, builtin_prose, builtin_topics
from arc_lab.data.loaders import dataset_fingerprint, load_mc

SPLITS = ("train", "validation", "test")


def _all_items():
    return [item for split in SPLITS for item in builtin_items(split)]


def test_sizes_topics_and_shape():
    items = _all_items()
    assert len(items) >= 300
    assert len(builtin_topics()) >= 6
    sizes = {split: len(builtin_items(split)) for split in SPLITS}
    assert sizes["train"] > sizes["test"] > sizes["validation"] > 0
    ids = [item.id for item in items]
    assert len(set(ids)) == len(ids)
    for item in items:
        assert re.fullmatch(r"builtin-[a-z_]+-\d+", item.id)
        assert item.source == "builtin" and item.labels == ("A", "B", "C", "D")
        assert len(item.choices) == 4 and len(set(item.choices)) == 4
    assert {item.id.split("-")[1] for item in builtin_items("test")} == set(builtin_topics())


def test_split_fractions_by_fact():
    facts = builtin_facts()
    share = {split: sum(f.split == split for f in facts) / len(facts) for split in SPLITS}
    assert 0.55 < share["train"] < 0.65 and 0.10 < share["validation"] < 0.20 and 0.20 < share["test"] < 0.30
    by_id = {item.id: item for item in _all_items()}
    for fact in facts:  # every question of a fact lives in that fact's split
        assert all(by_id[i].split == fact.split for i in fact.item_ids)


def test_test_facts_are_in_prose_but_not_in_train_or_validation_items():
    prose = "\n".join(builtin_prose())
    seen = [item for split in ("train", "validation") for item in builtin_items(split)]
    test_facts = [f for f in builtin_facts() if f.split == "test"]
    assert test_facts
    for fact in test_facts:
        assert fact.sentence in prose
        for item in seen:
            gold = item.choices[item.gold]
            asks_value = _mentions(item.question, fact.subject) and gold == fact.value
            asks_subject = _mentions(item.question, fact.value) and gold == fact.subject
            assert not (asks_value or asks_subject), (fact, item)


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE) is not None


def test_every_fact_is_stated_in_prose():
    prose = "\n".join(builtin_prose())
    assert all(fact.sentence in prose for fact in builtin_facts())


def test_deterministic_and_stable_fingerprint():
    assert _all_items() == _all_items()
    assert load_mc("builtin", "dev") == builtin_items("validation")
    fp = dataset_fingerprint("builtin", "test")
    # A fresh interpreter with another hash seed must generate the very same set.
    code = "from arc_lab.data.loaders import dataset_fingerprint as f; print(f('builtin', 'test'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fp


def test_example_question_reads_naturally():
    items = {item.question: item for item in _all_items()}
    item = items["What is the chemical symbol of sodium?"]
    assert item.choices[item.gold] == "Na"
