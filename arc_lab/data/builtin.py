"""The built-in offline set: invented entities, facts only the CPT prose states, and questions about them.

It exists so that the recipe's mechanism -- continued pre-training (CPT) puts facts into the weights, then
preference tuning (DPO) teaches the model to *use* facts it has read to rank answers -- can be measured
offline on any machine, with a pretrained 135M model that cannot know the answers beforehand:

* **Invented entities.** Made-up minerals, beetles, moons of the invented planet Orvana and devices, with
  generated names (``varnite``, ``the dolsk beetle``). Their properties take values from shared
  vocabularies of ordinary words (colours, places, foods, materials, power sources), assigned by a seeded
  draw, so no pretrained prior points at the answer.
* **Split by entity.** An entity and all of its facts belong to one split (train / validation / test).
  Each vocabulary is partitioned between the splits too, so no answer string of one split appears in
  another split's questions or choices. Within a split, every question of a relation offers that split's
  four values of the relation's vocabulary, each value is gold for the same number of entities, and gold
  positions are balanced: how often a string was gold, its length, and its position say nothing about
  the answer.
* **The prose states every fact of every split** (:func:`builtin_prose`), train entities included, each
  in :data:`PARAPHRASES` different phrasings spread over as many different paragraphs: DPO learns to
  extract facts on the train entities and is tested on entities it has only read about.

Item ids are ``builtin-<kind>-<entity>-<relation>``; :func:`builtin_entity` maps an id to its entity (the
cluster for standard errors: the questions of one entity are not independent).

Determinism: every random draw uses ``random.Random`` seeded with a string (hashed with SHA-512 by
CPython, independent of ``PYTHONHASHSEED``), and nothing iterates over a set.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import TypeVar

from arc_lab.data.records import SPLITS, MCItem

T = TypeVar("T")
SEED = "arc_lab-builtin-v2"
LABELS = ("A", "B", "C", "D")
#: Entities per kind in each split (each entity has two relations, so questions = 2 x entities).
ENTITIES_PER_KIND = {"train": 12, "validation": 4, "test": 12}
#: Phrasings of every fact in the prose (each in its own paragraph).
PARAPHRASES = 4
#: Every vocabulary: 12 ordinary words, 4 per split (the first 4 after a seeded shuffle go to train, ...).
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "color": (
        "red", "blue", "green", "yellow", "white", "black", "orange", "purple", "gray", "brown", "pink", "silver",
    ),
    "place": (
        "caves", "deserts", "rivers", "mountains", "swamps", "beaches",
        "forests", "valleys", "glaciers", "canyons", "meadows", "islands",
    ),
    "food": (
        "leaves", "seeds", "bark", "fungus", "pollen", "roots", "moss", "fruit", "nectar", "algae", "grass", "berries",
    ),
    "material": ("iron", "copper", "glass", "stone", "wood", "salt", "clay", "ice", "sand", "wax", "bone", "tin"),
    "power": (
        "wind", "steam", "water", "sunlight", "batteries", "coal", "oil", "magnets", "springs", "gas", "tides", "fire",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Relation:
    """One property of a kind of entity: its vocabulary, question and prose phrasings.

    Attributes:
        name: relation name (the last part of item ids).
        vocabulary: key of :data:`VOCABULARIES`.
        question: question template with ``{s}`` (the entity's name as used in a sentence).
        sentences: :data:`PARAPHRASES` prose templates with ``{s}`` and ``{v}``.
    """

    name: str
    vocabulary: str
    question: str
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class Kind:
    """A kind of invented entity: how its names are made, introduced and described.

    Attributes:
        name: kind name (item ids: ``builtin-<kind>-<n>-<relation>``).
        name_format: turns a generated stem into the entity's name (``{}ite``, ``the {} beetle``).
        intro: the sentence that opens each prose paragraph about this kind.
        relations: the two properties every entity of this kind has.
    """

    name: str
    name_format: str
    intro: str
    relations: tuple[Relation, ...]


KINDS: tuple[Kind, ...] = (
    Kind(
        "mineral",
        "{}ite",
        "Geologists have described many rare minerals.",
        (
            Relation(
                "color",
                "color",
                "What color is the mineral {s}?",
                (
                    "{S} is {v} in color.",
                    "The mineral {s} is always {v}.",
                    "A freshly broken piece of {s} looks {v}.",
                    "Collectors recognize {s} by its {v} color.",
                ),
            ),
            Relation(
                "place",
                "place",
                "Where is the mineral {s} usually found?",
                (
                    "{S} is usually found in {v}.",
                    "Most of the world's {s} comes from {v}.",
                    "Prospectors look for {s} in {v}.",
                    "The mineral {s} forms in {v}.",
                ),
            ),
        ),
    ),
    Kind(
        "beetle",
        "the {} beetle",
        "Entomologists keep finding new kinds of beetles.",
        (
            Relation(
                "food",
                "food",
                "What does {s} eat?",
                (
                    "{S} eats {v}.",
                    "The main food of {s} is {v}.",
                    "{S} feeds almost only on {v}.",
                    "To keep {s} alive, give it {v}.",
                ),
            ),
            Relation(
                "color",
                "color",
                "What color is {s}?",
                (
                    "{S} is {v}.",
                    "The shell of {s} is {v}.",
                    "You can spot {s} by its {v} shell.",
                    "Every adult of {s} has {v} wings.",
                ),
            ),
        ),
    ),
    Kind(
        "moon",
        "{}",
        "The distant planet Orvana has dozens of moons.",
        (
            Relation(
                "material",
                "material",
                "What is the surface of the moon {s} made of?",
                (
                    "The surface of the moon {s} is made of {v}.",
                    "{S}, a moon of Orvana, is covered in {v}.",
                    "Probes that landed on {s} found a crust of {v}.",
                    "The ground of {s} is mostly {v}.",
                ),
            ),
            Relation(
                "color",
                "color",
                "What color does the moon {s} glow?",
                (
                    "The moon {s} glows {v}.",
                    "Seen from Orvana, {s} shines {v}.",
                    "{S} gives off {v} light.",
                    "At night the moon {s} looks {v}.",
                ),
            ),
        ),
    ),
    Kind(
        "device",
        "the {}",
        "Inventors have built many strange machines.",
        (
            Relation(
                "power",
                "power",
                "What powers {s}?",
                (
                    "{S} is powered by {v}.",
                    "{S} runs on {v}.",
                    "The energy for {s} comes from {v}.",
                    "Without {v}, {s} cannot work.",
                ),
            ),
            Relation(
                "material",
                "material",
                "What is {s} made of?",
                (
                    "{S} is made of {v}.",
                    "The body of {s} is built from {v}.",
                    "Workshops make {s} out of {v}.",
                    "Every part of {s} is cut from {v}.",
                ),
            ),
        ),
    ),
)
#: Stems for the device kind get one of these endings (``the brenoscope``).
_DEVICE_ENDINGS = ("scope", "meter", "graph", "phone")
_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gl",
    "kr",
    "pl",
    "tr",
)
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "l", "n", "r", "s", "k", "m")


@dataclass(frozen=True)
class Fact:
    """One fact: an entity's value for one relation, its split, prose sentences and question id.

    Attributes:
        topic: the entity's kind (``mineral``, ``beetle``, ``moon``, ``device``).
        relation: relation name.
        subject: the entity's name as used inside a sentence (``varnite``, ``the dolsk beetle``).
        value: the value word.
        split: the entity's split.
        sentence: the first phrasing (the others are in ``sentences``).
        item_ids: the question asked about this fact (one).
        entity: the entity id (``builtin-<kind>-<n>``), the cluster of its questions.
        sentences: every phrasing, one per paragraph of the prose.
    """

    topic: str
    relation: str
    subject: str
    value: str
    split: str
    sentence: str
    item_ids: tuple[str, ...]
    entity: str = ""
    sentences: tuple[str, ...] = ()


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _render(template: str, subject: str, value: str = "") -> str:
    """Fill a template; ``{S}`` is the subject with a capital first letter (sentence start)."""
    return template.format(s=subject, S=_capitalize(subject), v=value)


def split_vocabularies() -> dict[str, dict[str, tuple[str, ...]]]:
    """``{vocabulary: {split: its 4 words}}``: each vocabulary partitioned between the splits by a seeded
    shuffle, so that no value string is shared by two splits."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, words in VOCABULARIES.items():
        order = list(words)
        random.Random(f"{SEED}/vocab/{name}").shuffle(order)
        out[name] = {split: tuple(order[4 * i : 4 * i + 4]) for i, split in enumerate(SPLITS)}
    return out


def _names(n: int) -> list[str]:
    """``n`` distinct invented stems of two or three syllables (seeded)."""
    rnd, stems = random.Random(f"{SEED}/names"), list[str]()
    vocabulary_words = {w for words in VOCABULARIES.values() for w in words}
    while len(stems) < n:
        syllables = rnd.choice((2, 2, 3))
        stem = "".join(rnd.choice(_ONSETS) + rnd.choice(_VOWELS) for _ in range(syllables)) + rnd.choice(
            _CODAS
        )
        if (
            stem not in stems
            and stem not in vocabulary_words
            and not any(w in stem for w in vocabulary_words)
        ):
            stems.append(stem)
    return stems


def _entity_name(kind: Kind, stem: str, n: int) -> str:
    if kind.name == "device":
        stem += _DEVICE_ENDINGS[n % len(_DEVICE_ENDINGS)]
    if kind.name == "moon":
        stem = _capitalize(stem)
    return kind.name_format.format(stem)


def _balanced_values(values: tuple[T, ...], n: int, rnd: random.Random) -> list[T]:
    """``n`` values (``n`` a multiple of ``len(values)``), each used ``n / len(values)`` times, shuffled."""
    if n % len(values):
        raise ValueError(f"builtin: {n} entities cannot be balanced over {len(values)} values")
    out = [v for v in values for _ in range(n // len(values))]
    rnd.shuffle(out)
    return out


@functools.lru_cache(maxsize=1)
def _build() -> tuple[tuple[Fact, ...], tuple[MCItem, ...]]:
    """Generate every entity, fact and question once (cached; the result is immutable)."""
    vocab = split_vocabularies()
    total = len(KINDS) * sum(ENTITIES_PER_KIND.values())
    stems = iter(_names(total))
    facts: list[Fact] = []
    items: list[MCItem] = []
    for kind in KINDS:
        n = 0
        for split in SPLITS:
            count = ENTITIES_PER_KIND[split]
            names = [_entity_name(kind, next(stems), n + i) for i in range(count)]
            for rel in kind.relations:
                values = vocab[rel.vocabulary][split]
                rnd = random.Random(f"{SEED}/values/{kind.name}/{rel.name}/{split}")
                assigned = _balanced_values(values, count, rnd)
                gold_slots = _balanced_values(tuple(range(len(LABELS))), count, rnd)
                for i, (name, value, slot) in enumerate(zip(names, assigned, gold_slots, strict=True)):
                    entity = f"builtin-{kind.name}-{n + i}"
                    item_id = f"{entity}-{rel.name}"
                    others = [v for v in values if v != value]
                    rnd.shuffle(others)
                    choices = (*others[:slot], value, *others[slot:])
                    items.append(
                        MCItem(
                            id=item_id,
                            question=_capitalize(_render(rel.question, name)),
                            choices=choices,
                            gold=slot,
                            source="builtin",
                            split=split,
                            labels=LABELS,
                        )
                    )
                    sentences = tuple(_render(t, name, value) for t in rel.sentences)
                    facts.append(
                        Fact(
                            kind.name,
                            rel.name,
                            name,
                            value,
                            split,
                            sentences[0],
                            (item_id,),
                            entity,
                            sentences,
                        )
                    )
            n += count
    return tuple(facts), tuple(items)


def builtin_facts() -> list[Fact]:
    """Every fact with its split, prose sentences and question id, in generation order."""
    return list(_build()[0])


def builtin_items(split: str) -> list[MCItem]:
    """The generated questions of one split (``train``/``validation``/``test``), in generation order.

    Raises:
        ValueError: for a split name that is not canonical.
    """
    if split not in SPLITS:
        raise ValueError(f"builtin: unknown split {split!r}: expected one of {list(SPLITS)}")
    return [item for item in _build()[1] if item.split == split]


def cloze_prefix(template: str, subject: str) -> str:
    """The part of a prose template before its value, filled in: ``"{S} is {v} in color."`` ->
    ``"Varnite is"`` (the value is the continuation ``" red"``).

    Raises:
        ValueError: the template does not state the subject before the value (the prefix would not say
            which entity is meant).
    """
    head = template.split("{v}")[0]
    if "{s}" not in head and "{S}" not in head:
        raise ValueError(f"builtin cloze: template {template!r} names the value before the subject")
    return _render(head, subject).rstrip()


def builtin_cloze_items(split: str) -> list[MCItem]:
    """The cloze probe of one split: each question's fact in the prose's own first phrasing, cut before the
    value, with the question's four values as continuations (same choices, same gold, in the same order).

    It measures whether a fact is *stored* (the model completes the sentence it read) apart from whether it
    can be *extracted* in the ``Question:/Answer:`` layout (the storage vs extraction distinction of
    Allen-Zhu & Li, "Physics of Language Models: Part 3.1", 2023). The prompt is the raw prefix (the
    ``obqa`` prompt style renders ``question`` as it is). Ids are ``cloze-<question id>``, so
    :func:`builtin_entity` gives ``cloze-<entity>``: one cluster per entity, as for the questions.

    Raises:
        ValueError: for a split name that is not canonical.
    """
    facts = {f.item_ids[0]: f for f in _build()[0]}
    templates = {(k.name, r.name): r.sentences[0] for k in KINDS for r in k.relations}
    out = []
    for item in builtin_items(split):
        fact = facts[item.id]
        prefix = cloze_prefix(templates[(fact.topic, fact.relation)], fact.subject)
        out.append(
            MCItem(
                id=f"cloze-{item.id}",
                question=prefix,
                choices=item.choices,
                gold=item.gold,
                source="builtin_cloze",
                split=split,
                labels=item.labels,
            )
        )
    return out


def generated_items(dataset: str, split: str) -> list[MCItem]:
    """The items of a generated data set (``builtin`` or ``builtin_cloze``) for one split."""
    return {"builtin": builtin_items, "builtin_cloze": builtin_cloze_items}[dataset](split)


def builtin_topics() -> list[str]:
    """Kinds of entity, in generation order."""
    return [kind.name for kind in KINDS]


def builtin_entity(item_id: str) -> str:
    """The entity a builtin question is about (``builtin-mineral-7-color`` -> ``builtin-mineral-7``)."""
    return item_id.rsplit("-", 1)[0]


def builtin_prose(entities_per_paragraph: int = 3) -> list[str]:
    """Paragraphs that state every fact of every split, each fact once per phrasing, for CPT.

    For phrasing ``p`` (0 .. :data:`PARAPHRASES` - 1), the entities of each kind are shuffled (a seeded
    draw per phrasing) and grouped ``entities_per_paragraph`` to a paragraph, which opens with the kind's
    introduction and states each entity's facts in phrasing ``p``. So every fact appears in
    :data:`PARAPHRASES` different phrasings, in as many different paragraphs, next to different entities.
    """
    by_entity: dict[str, list[Fact]] = {}
    for fact in _build()[0]:
        by_entity.setdefault(fact.entity, []).append(fact)
    paragraphs = []
    for p in range(PARAPHRASES):
        for kind in KINDS:
            entities = [e for e, fs in by_entity.items() if fs[0].topic == kind.name]
            rnd = random.Random(f"{SEED}/prose/{kind.name}/{p}")
            rnd.shuffle(entities)
            for start in range(0, len(entities), entities_per_paragraph):
                sentences = [kind.intro]
                for entity in entities[start : start + entities_per_paragraph]:
                    facts = list(by_entity[entity])
                    rnd.shuffle(facts)
                    sentences += [f.sentences[p] for f in facts]
                paragraphs.append(" ".join(sentences))
    return paragraphs
