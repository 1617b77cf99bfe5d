"""A small original science multiple-choice set, generated from fact tables, with its CPT prose.

It exists so that the whole pipeline (continued pre-training on prose, then preference tuning on
questions, then lm-eval-style scoring) runs offline on any machine, with numbers that mean something
for a 135M model. Everything here is written for arc_lab; nothing is copied from a public dataset.

Each *relation* is a table of ``(subject, value)`` facts plus question and sentence templates. A fact can
yield a forward question (ask for the value) and, when its value is unique in the table, a reverse
question (ask for the subject). Facts, not questions, are split 60/15/25 into train/validation/test
per relation, so a test question asks about a fact that appears in the prose (:func:`builtin_prose`)
but never in any train or validation question or answer. Distractors are other values of the same
relation, which can belong to facts of any split.

Determinism: every random draw uses ``random.Random`` seeded with a string (hashed with SHA-512 by
CPython, independent of ``PYTHONHASHSEED``), and nothing iterates over a set.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from arc_lab.data.records import SPLITS, MCItem

SEED = "arc_lab-builtin-v1"
LABELS = ("A", "B", "C", "D")
#: Fraction of each relation's facts that go to train / validation; the rest is test.
SPLIT_FRACTIONS = (0.60, 0.15)


@dataclass(frozen=True)
class Relation:
    """One fact table and the templates that turn it into questions and prose.

    Attributes:
        topic: topic name used in item ids (``builtin-<topic>-<n>``).
        name: relation name, unique within the topic.
        facts: ``(subject, value)`` rows.
        sentence: prose template with ``{s}`` and ``{v}``; rendered once per fact.
        forward: question asking for the value (``{s}``), or None.
        reverse: question asking for the subject (``{v}``), or None; used only for unique values.
    """

    topic: str
    name: str
    facts: tuple[tuple[str, str], ...]
    sentence: str
    forward: str | None
    reverse: str | None


@dataclass(frozen=True)
class Fact:
    """One fact, the split it belongs to, its prose sentence and the ids of the questions it yields."""

    topic: str
    relation: str
    subject: str
    value: str
    split: str
    sentence: str
    item_ids: tuple[str, ...]


def _rel(
    topic: str, name: str, sentence: str, forward: str | None, reverse: str | None, rows: str
) -> Relation:
    """Build a relation from ``subject | value`` lines."""
    facts = tuple(tuple(part.strip() for part in line.split("|")) for line in rows.strip().splitlines())
    return Relation(topic, name, facts, sentence, forward, reverse)  # type: ignore[arg-type]


RELATIONS: tuple[Relation, ...] = (
    _rel(
        "elements",
        "symbol",
        "The chemical symbol of {s} is {v}.",
        "What is the chemical symbol of {s}?",
        "Which element has the chemical symbol {v}?",
        """
hydrogen | H
helium | He
lithium | Li
beryllium | Be
boron | B
carbon | C
nitrogen | N
oxygen | O
fluorine | F
neon | Ne
sodium | Na
magnesium | Mg
aluminum | Al
silicon | Si
phosphorus | P
sulfur | S
chlorine | Cl
argon | Ar
potassium | K
calcium | Ca
titanium | Ti
chromium | Cr
manganese | Mn
iron | Fe
cobalt | Co
nickel | Ni
copper | Cu
zinc | Zn
bromine | Br
krypton | Kr
silver | Ag
tin | Sn
iodine | I
xenon | Xe
tungsten | W
platinum | Pt
gold | Au
mercury | Hg
lead | Pb
uranium | U
""",
    ),
    _rel(
        "compounds",
        "formula",
        "The chemical formula of {s} is {v}.",
        "What is the chemical formula of {s}?",
        "Which substance has the chemical formula {v}?",
        """
water | H2O
carbon dioxide | CO2
carbon monoxide | CO
table salt | NaCl
methane | CH4
ammonia | NH3
glucose | C6H12O6
hydrogen peroxide | H2O2
ozone | O3
oxygen gas | O2
nitrogen gas | N2
hydrochloric acid | HCl
sulfuric acid | H2SO4
baking soda | NaHCO3
calcium carbonate | CaCO3
""",
    ),
    _rel(
        "planets",
        "order",
        "{s} is the {v} planet from the Sun.",
        "In order from the Sun, which position does {s} have among the planets?",
        "Which planet is the {v} planet from the Sun?",
        """
Mercury | first
Venus | second
Earth | third
Mars | fourth
Jupiter | fifth
Saturn | sixth
Uranus | seventh
Neptune | eighth
""",
    ),
    _rel(
        "planets",
        "feature",
        "{s} {v}.",
        None,
        "Which planet {v}?",
        """
Mercury | is the smallest planet in the solar system
Venus | is the hottest planet because its thick clouds trap heat
Earth | is the only planet known to have liquid water oceans and life
Mars | is called the Red Planet because of the iron oxide in its soil
Jupiter | is the largest planet in the solar system
Saturn | has the largest and brightest system of rings
Uranus | spins on its side, with its axis tilted almost flat
Neptune | has the fastest winds measured on any planet
""",
    ),
    _rel(
        "earth",
        "layer",
        "{s} {v}.",
        None,
        "Which layer of the Earth {v}?",
        """
the crust | is thin and rocky and lies on the outside
the mantle | is a thick layer of hot, slowly flowing rock below the crust
the outer core | is made of liquid iron and nickel
the inner core | is a solid metal ball at the very center
""",
    ),
    _rel(
        "earth",
        "cycle",
        "{s} causes {v}.",
        "What does {s} cause?",
        "What causes {v}?",
        """
the spinning of the Earth on its axis | day and night
the tilt of the Earth's axis | the seasons
the pull of the Moon's gravity | the ocean tides
the changing position of the Moon as it orbits the Earth | the phases of the Moon
""",
    ),
    _rel(
        "units",
        "si_unit",
        "The SI unit of {s} is the {v}.",
        "What is the SI unit of {s}?",
        "Which quantity is measured in the SI unit called the {v}?",
        """
force | newton
energy | joule
power | watt
electric current | ampere
voltage | volt
electrical resistance | ohm
frequency | hertz
pressure | pascal
mass | kilogram
length | meter
time | second
temperature | kelvin
electric charge | coulomb
amount of substance | mole
capacitance | farad
""",
    ),
    _rel(
        "instruments",
        "measures",
        "A {s} is used to measure {v}.",
        "What does a {s} measure?",
        "Which instrument is used to measure {v}?",
        """
thermometer | temperature
barometer | air pressure
anemometer | wind speed
ammeter | electric current
voltmeter | voltage
seismograph | the shaking of the ground during earthquakes
hygrometer | humidity
rain gauge | the amount of rainfall
spring scale | force
graduated cylinder | the volume of a liquid
pan balance | mass
stopwatch | time
metric ruler | length
""",
    ),
    _rel(
        "human_body",
        "function",
        "The {s} {v}.",
        "What does the {s} do?",
        "Which part of the body {v}?",
        """
heart | pumps blood through the body
lung | takes in oxygen and gets rid of carbon dioxide
stomach | breaks down food using acid and enzymes
small intestine | absorbs most of the nutrients from digested food
large intestine | absorbs water from undigested food
kidney | filters wastes from the blood and makes urine
liver | makes bile and removes poisons from the blood
brain | controls thinking, memory and the rest of the body
skin | covers the body and protects it from germs
pancreas | makes insulin to control blood sugar
bladder | stores urine until it leaves the body
esophagus | carries swallowed food from the mouth to the stomach
trachea | carries air from the throat to the lungs
spinal cord | carries nerve signals between the brain and the body
skull | protects the brain
diaphragm | contracts to pull air into the lungs
red blood cell | carries oxygen from the lungs to the rest of the body
white blood cell | fights germs that cause infections
platelet | helps the blood clot to close a wound
""",
    ),
    _rel(
        "cells",
        "organelle",
        "In a cell, the {s} {v}.",
        "What does the {s} do in a cell?",
        "Which part of a cell {v}?",
        """
nucleus | holds the DNA and controls the cell's activities
mitochondrion | releases energy from food through cellular respiration
chloroplast | captures sunlight to make food by photosynthesis
cell membrane | controls what enters and leaves the cell
cell wall | gives a plant cell a stiff supporting layer
ribosome | builds proteins
vacuole | stores water and other materials
""",
    ),
    _rel(
        "matter",
        "phase_change",
        "The change from {s} is called {v}.",
        "What is the change from {s} called?",
        "Which change of state is called {v}?",
        """
a solid to a liquid | melting
a liquid to a solid | freezing
a liquid to a gas | evaporation
a gas to a liquid | condensation
a solid directly to a gas | sublimation
a gas directly to a solid | deposition
""",
    ),
    _rel(
        "matter",
        "state",
        "{s} {v}.",
        None,
        "Which state of matter {v}?",
        """
a solid | has a definite shape and a definite volume
a liquid | has a definite volume but takes the shape of its container
a gas | has no definite shape and expands to fill its container
plasma | is made of electrically charged particles and is found in stars
""",
    ),
    _rel(
        "energy",
        "conversion",
        "{s} changes {v}.",
        "What energy change happens in {s}?",
        "Which of these changes {v}?",
        """
a solar panel | light energy into electrical energy
a battery | stored chemical energy into electrical energy
an electric motor | electrical energy into motion
a generator | motion into electrical energy
a loudspeaker | electrical energy into sound
a microphone | sound into an electrical signal
an electric toaster | electrical energy into heat
a green leaf | light energy into chemical energy stored in sugar
a wind turbine | the kinetic energy of moving air into electrical energy
a car engine | the chemical energy of fuel into motion and heat
a stretched rubber band that is let go | elastic potential energy into kinetic energy
a flashlight bulb | electrical energy into light
""",
    ),
    _rel(
        "machines",
        "example",
        "{s} is an example of {v}.",
        "Which simple machine is {s}?",
        None,
        """
a ramp | an inclined plane
a seesaw | a lever
a doorknob | a wheel and axle
the rope and wheel at the top of a flagpole | a pulley
an axe blade | a wedge
the threaded lid of a jar | a screw
a crowbar | a lever
a knife blade | a wedge
a sloping wheelchair path | an inclined plane
a steering wheel | a wheel and axle
a bolt | a screw
""",
    ),
    _rel(
        "machines",
        "definition",
        "{s} is {v}.",
        "Which description fits {s}?",
        "Which simple machine is {v}?",
        """
a lever | a stiff bar that turns around a fixed point called a fulcrum
a pulley | a grooved wheel with a rope that changes the direction of a pull
an inclined plane | a flat sloping surface used to raise loads
a wedge | two sloping surfaces that meet at a sharp edge
a screw | an inclined plane wrapped around a post
a wheel and axle | a large wheel fixed to a rod that turns with it
""",
    ),
    _rel(
        "animals",
        "vertebrate_class",
        "The {s} belongs to the {v}.",
        "To which group of vertebrates does the {s} belong?",
        None,
        """
whale | mammals
bat | mammals
dolphin | mammals
shark | fish
salmon | fish
frog | amphibians
salamander | amphibians
toad | amphibians
snake | reptiles
crocodile | reptiles
lizard | reptiles
eagle | birds
penguin | birds
ostrich | birds
""",
    ),
)


def _split_of_facts(relation: Relation) -> list[str]:
    """Assign each fact of a relation to a split: a seeded shuffle, then the first 60% train, 15% val."""
    n = len(relation.facts)
    order = list(range(n))
    random.Random(f"{SEED}/split/{relation.topic}/{relation.name}").shuffle(order)
    n_train = round(n * SPLIT_FRACTIONS[0])
    n_val = max(1, round(n * SPLIT_FRACTIONS[1]))
    splits = [""] * n
    for rank, idx in enumerate(order):
        splits[idx] = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
    return splits


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _question(template: str, subject: str, value: str) -> str:
    return _capitalize(template.format(s=subject, v=value))


def _choices(gold: str, pool: list[str], rnd: random.Random) -> tuple[tuple[str, ...], int]:
    """Gold plus three distinct distractors from ``pool`` (ordered, unique, gold excluded), shuffled."""
    others = [p for p in pool if p != gold]
    if len(others) < 3:
        raise ValueError(
            f"builtin: only {len(others)} distractors for {gold!r}; a relation needs >= 4 values"
        )
    choices = [*rnd.sample(others, 3), gold]
    rnd.shuffle(choices)
    return tuple(choices), choices.index(gold)


@functools.lru_cache(maxsize=1)
def _build() -> tuple[tuple[Fact, ...], tuple[MCItem, ...]]:
    """Generate every fact and question once (cached; the result is immutable)."""
    facts: list[Fact] = []
    items: list[MCItem] = []
    counters: dict[str, int] = {}
    for rel in RELATIONS:
        values = list(dict.fromkeys(v for _, v in rel.facts))
        subjects = list(dict.fromkeys(s for s, _ in rel.facts))
        value_count = {v: sum(1 for _, w in rel.facts if w == v) for v in values}
        for (subject, value), split in zip(rel.facts, _split_of_facts(rel), strict=True):
            ids = []
            asks = [(rel.forward, value, values)]
            if rel.reverse and value_count[value] == 1:
                asks.append((rel.reverse, subject, subjects))
            for template, gold, pool in asks:
                if template is None:
                    continue
                n = counters.get(rel.topic, 0)
                counters[rel.topic] = n + 1
                item_id = f"builtin-{rel.topic}-{n}"
                choices, gold_idx = _choices(gold, pool, random.Random(f"{SEED}/choices/{item_id}"))
                items.append(
                    MCItem(
                        id=item_id,
                        question=_question(template, subject, value),
                        choices=choices,
                        gold=gold_idx,
                        source="builtin",
                        split=split,
                        labels=LABELS,
                    )
                )
                ids.append(item_id)
            facts.append(
                Fact(
                    rel.topic,
                    rel.name,
                    subject,
                    value,
                    split,
                    _capitalize(rel.sentence.format(s=subject, v=value)),
                    tuple(ids),
                )
            )
    return tuple(facts), tuple(items)


def builtin_facts() -> list[Fact]:
    """Every fact with its split, prose sentence and question ids, in table order."""
    return list(_build()[0])


def builtin_items(split: str) -> list[MCItem]:
    """The generated questions of one split (``train``/``validation``/``test``), in table order.

    Raises:
        ValueError: for a split name that is not canonical.
    """
    if split not in SPLITS:
        raise ValueError(f"builtin: unknown split {split!r}: expected one of {list(SPLITS)}")
    return [item for item in _build()[1] if item.split == split]


def builtin_topics() -> list[str]:
    """Topic names, in table order."""
    return list(dict.fromkeys(rel.topic for rel in RELATIONS))


_INTROS = {
    "elements": "Every chemical element has a short symbol of one or two letters.",
    "compounds": "A chemical formula shows which atoms make up a substance and how many of each.",
    "planets": "Eight planets travel around the Sun in our solar system.",
    "earth": "The Earth is built in layers, and its motions shape our days and years.",
    "units": "Scientists around the world use the International System of Units, called SI.",
    "instruments": "Scientists use instruments to measure the world around them.",
    "human_body": "The human body is made of organs and tissues that work together.",
    "cells": "All living things are made of cells, and each part of a cell has a job.",
    "matter": "Matter exists in different states and can change from one state to another.",
    "energy": "Energy cannot be created or destroyed, but it can change from one form to another.",
    "machines": "Simple machines make work easier by changing the size or direction of a force.",
    "animals": "Vertebrates are animals with a backbone, sorted into groups by their features.",
}


def builtin_prose(sentences_per_paragraph: int = 6) -> list[str]:
    """Paragraphs that state every fact of the set (all splits), for continued pre-training.

    Each topic gets an introductory sentence followed by its fact sentences, cut into paragraphs of at
    most ``sentences_per_paragraph`` fact sentences; later paragraphs repeat the introduction so that
    every paragraph stands on its own.
    """
    paragraphs = []
    for topic in builtin_topics():
        sentences = [f.sentence for f in _build()[0] if f.topic == topic]
        for start in range(0, len(sentences), sentences_per_paragraph):
            chunk = sentences[start : start + sentences_per_paragraph]
            paragraphs.append(" ".join([_INTROS[topic], *chunk]))
    return paragraphs
