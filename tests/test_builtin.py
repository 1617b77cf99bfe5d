"""The built-in set's generator: split by entity, balanced values, no leak between splits, every fact in
the prose in several phrasings, and no answer reachable without a model (issue 8)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from arc_lab.data.builtin import (
    PARAPHRASES,
    builtin_entity,
    builtin_facts,
    builtin_items,
    builtin_prose,
    builtin_topics,
    split_vocabularies,
)
from arc_lab.data.loaders import dataset_fingerprint, load_mc

SPLITS = ("train", "validation", "test")
CHANCE = 0.25  # four choices


def _all_items():
    return [item for split in SPLITS for item in builtin_items(split)]


def _gold(item) -> str:
    return item.choices[item.gold]


def test_sizes_ids_and_shape():
    items = _all_items()
    test = builtin_items("test")
    assert len(test) >= 80 and len({builtin_entity(i.id) for i in test}) >= 40
    ids = [item.id for item in items]
    assert len(set(ids)) == len(ids)
    for item in items:
        assert re.fullmatch(r"builtin-[a-z]+-\d+-[a-z]+", item.id)
        assert item.source == "builtin" and item.labels == ("A", "B", "C", "D")
        assert len(item.choices) == 4 and len(set(item.choices)) == 4
    assert {item.id.split("-")[1] for item in test} == set(builtin_topics())


def test_split_by_entity():
    split_of: dict[str, set[str]] = {}
    for item in _all_items():
        split_of.setdefault(builtin_entity(item.id), set()).add(item.split)
    assert all(len(s) == 1 for s in split_of.values())
    for fact in builtin_facts():
        assert builtin_entity(fact.item_ids[0]) == fact.entity
        assert all(item.split == fact.split for item in _all_items() if item.id in fact.item_ids)


def test_no_answer_string_or_entity_name_leaks_between_splits():
    strings = {s: {c for item in builtin_items(s) for c in item.choices} for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not strings[a] & strings[b], (a, b, strings[a] & strings[b])
    names = {s: {f.subject for f in builtin_facts() if f.split == s} for s in SPLITS}
    for split in SPLITS:
        others = [n for s in SPLITS if s != split for n in names[s]]
        for item in builtin_items(split):
            assert not any(re.search(rf"\b{re.escape(n)}\b", item.question) for n in others), item


def test_values_are_balanced_and_distractors_come_from_the_same_relation():
    vocab = split_vocabularies()
    relation_vocab = {(f.topic, f.relation): None for f in builtin_facts()}
    facts = {f.item_ids[0]: f for f in builtin_facts()}
    for split in SPLITS:
        for topic, relation in relation_vocab:
            items = [
                i
                for i in builtin_items(split)
                if facts[i.id].topic == topic and facts[i.id].relation == relation
            ]
            assert items
            values = set(items[0].choices)
            # distractors: the split's values of this relation's vocabulary
            assert any(values == set(words[split]) for words in vocab.values())
            assert all(set(i.choices) == values for i in items)
            gold = Counter(_gold(i) for i in items)
            shown = Counter(c for i in items for c in i.choices)
            # every value is gold equally often, so its gold rate when shown is exactly 1/4
            assert set(gold) == values and len(set(gold.values())) == 1
            assert all(gold[v] / shown[v] == CHANCE for v in values)
            positions = Counter(i.gold for i in items)
            assert set(positions) == {0, 1, 2, 3} and len(set(positions.values())) == 1


def test_every_fact_of_every_split_is_in_the_prose_in_several_phrasings_and_paragraphs():
    paragraphs = builtin_prose()
    assert PARAPHRASES >= 3
    for fact in builtin_facts():
        assert len(set(fact.sentences)) == PARAPHRASES and fact.sentence == fact.sentences[0]
        where = [i for s in fact.sentences for i, p in enumerate(paragraphs) if s in p]
        assert len(where) == PARAPHRASES and len(set(where)) == PARAPHRASES, fact
        assert all(fact.value in s and fact.subject.lower() in s.lower() for s in fact.sentences)
    assert {f.split for f in builtin_facts()} == set(SPLITS)


# ----------------------------------------------------------------------------------- no-model rules
def _first_max(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


def _rule_accuracy(rule, items) -> float:
    return sum(rule(item) == item.gold for item in items) / len(items)


def _gold_counts(splits: tuple[str, ...]) -> Counter:
    return Counter(_gold(i) for s in splits for i in builtin_items(s))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.mark.parametrize("seen", [("train",), ("train", "validation")])
def test_no_model_rules_stay_near_chance_on_test(seen):
    """Each rule breaks ties by the first choice; none may beat chance + 0.1 on test."""
    gold_count = _gold_counts(seen)
    shown = Counter(c for s in seen for i in builtin_items(s) for c in i.choices)
    rules = {
        "never gold in seen splits": lambda i: _first_max([float(gold_count[c] == 0) for c in i.choices]),
        "most often gold": lambda i: _first_max([gold_count[c] for c in i.choices]),
        "least often gold": lambda i: _first_max([-gold_count[c] for c in i.choices]),
        "highest gold rate when shown": lambda i: _first_max(
            [gold_count[c] / shown[c] if shown[c] else 0.0 for c in i.choices]
        ),
        "longest": lambda i: _first_max([len(c) for c in i.choices]),
        "shortest": lambda i: _first_max([-len(c) for c in i.choices]),
        "word overlap with the question": lambda i: _first_max(
            [len(_words(c) & _words(i.question)) for c in i.choices]
        ),
        "first choice": lambda i: 0,
        "last choice": lambda i: len(i.choices) - 1,
    }
    test = builtin_items("test")
    scores = {name: _rule_accuracy(rule, test) for name, rule in rules.items()}
    assert all(score <= CHANCE + 0.1 for score in scores.values()), scores


def test_builtin_entity():
    assert builtin_entity("builtin-mineral-7-color") == "builtin-mineral-7"


def test_deterministic_and_stable_fingerprint():
    assert _all_items() == _all_items()
    assert builtin_prose() == builtin_prose()
    assert load_mc("builtin", "dev") == builtin_items("validation")
    fp = dataset_fingerprint("builtin", "test")
    # A fresh interpreter with another hash seed must generate the very same set.
    code = "from arc_lab.data.loaders import dataset_fingerprint as f; print(f('builtin', 'test'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fp


def test_example_question_and_prose_read_naturally():
    item = builtin_items("test")[0]
    fact = next(f for f in builtin_facts() if f.item_ids == (item.id,))
    assert item.question == f"What color is the mineral {fact.subject}?"
    assert fact.sentences[0] == f"{fact.subject.capitalize()} is {fact.value} in color."


# ------------------------------------------------------------------------------------------ cloze probe
def test_cloze_probe_is_the_prose_sentence_cut_before_the_value():
    from arc_lab.data.builtin import builtin_cloze_items, builtin_items, builtin_prose

    prose = " ".join(builtin_prose())
    for split in ("train", "validation", "test"):
        questions, cloze = builtin_items(split), builtin_cloze_items(split)
        assert len(cloze) == len(questions)
        for q, c in zip(questions, cloze, strict=True):
            assert c.id == f"cloze-{q.id}" and c.choices == q.choices and c.gold == q.gold
            assert c.source == "builtin_cloze" and c.split == split
            # the gold continuation completes a sentence the CPT prose states verbatim; no distractor does
            assert c.question + " " + c.choices[c.gold] in prose
            assert not any(
                c.question + " " + v + " " in prose + " " for j, v in enumerate(c.choices) if j != c.gold
            )


def test_cloze_template_must_name_the_subject_before_the_value():
    from arc_lab.data.builtin import cloze_prefix

    assert cloze_prefix("{S} is {v} in color.", "varnite") == "Varnite is"
    with pytest.raises(ValueError, match="names the value before the subject"):
        cloze_prefix("Without {v}, {s} cannot work.", "the brenoscope")


def test_cloze_is_an_eval_task_with_entity_clusters():
    from arc_lab.data.builtin import builtin_entity
    from arc_lab.data.loaders import load_mc
    from arc_lab.eval.tasks import build_contexts

    items = load_mc("builtin_cloze", "test")
    assert build_contexts("builtin_cloze", items[:1], [], 0) == [items[0].question]
    assert len({builtin_entity(i.id) for i in items}) == len(items) // 2
