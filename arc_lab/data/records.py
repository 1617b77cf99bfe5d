"""The one multiple-choice record every loader normalises to."""

from __future__ import annotations

from dataclasses import dataclass

#: Canonical split names. Loaders accept aliases (``dev``/``valid``/``validation``).
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice science question, source-agnostic.

    Attributes:
        id: dataset id (ARC/OBQA ``id``); for SciQ, which has none, ``"sciq-<split>-<row>"``.
        question: the question text (ARC ``question.stem``, OBQA ``question_stem``, SciQ ``question``).
        choices: answer texts in dataset order (SciQ: ``[distractor1, distractor2, distractor3, correct]``
            exactly as lm-eval orders them, so gold is 3).
        gold: 0-based index of the correct choice.
        source: dataset name (``arc_challenge``, ``arc_easy``, ``openbookqa``, ``sciq``, ``builtin``, ...).
        split: canonical split name (``train``/``validation``/``test``).
        labels: the original choice labels (``A``-``E`` or ``1``-``4``); empty for SciQ.
        support: SciQ supporting paragraph (used by the SciQ harness prompt); ``""`` elsewhere.
    """

    id: str
    question: str
    choices: tuple[str, ...]
    gold: int
    source: str
    split: str
    labels: tuple[str, ...] = ()
    support: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(
                f"{self.source}/{self.split} item {self.id!r}: gold index {self.gold} is outside "
                f"its {len(self.choices)} choices"
            )
