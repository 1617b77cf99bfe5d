"""What a stage kind is: the one table config validation, chain planning, the report and the tests read.

A stage kind (``stage.name``) says which objective input kinds it trains on, its natural objective (the one
it trains with when composed as another stage's ``stage.init``), which ``data`` fields it reads (hashed into
its stage-cache key; the *content* of the files they name is hashed separately) and which of them must not
be empty. Adding a stage kind is one entry here plus its ``conf/stage/<name>.yaml`` preset (DESIGN.md).

This module imports nothing heavy: :mod:`arc_lab.config` reads it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class StageKind:
    """One kind of stage.

    Attributes:
        name: ``stage.name``.
        inputs: objective input kinds it trains on (``arc_lab.objectives.base.InputKind`` values); empty
            for a stage that trains nothing.
        default_objective: the objective it trains with when composed as an init stage (``stage.init=cpt``
            trains with ``clm``); None for a stage that trains nothing.
        data_fields: the ``data`` fields that change its weights (the rest of ``data`` does not).
        source_field: the ``data`` list that must name at least one source.
        trains_on: what that list holds, for messages (``prose``, ``questions``).
        description: one line for messages and documentation.
    """

    name: str
    inputs: tuple[str, ...]
    default_objective: str | None
    data_fields: tuple[str, ...]
    source_field: str | None
    trains_on: str
    description: str

    @property
    def trains(self) -> bool:
        """Whether the stage produces weights (an ``eval`` stage only scores its init model)."""
        return bool(self.inputs)


#: the data fields of the stages that build from multiple-choice questions (SFT examples, pairs, lists)
_MC_FIELDS = ("train_sources", "max_items_per_source", "decontaminate", "hub")

STAGE_KINDS: dict[str, StageKind] = {
    k.name: k
    for k in (
        StageKind(
            name="cpt",
            inputs=("packed",),
            default_objective="clm",
            data_fields=("cpt_sources", "max_cpt_texts", "hub"),
            source_field="cpt_sources",
            trains_on="prose",
            description="continual pre-training: causal-LM loss on packed prose blocks",
        ),
        StageKind(
            name="sft",
            inputs=("answer",),
            default_objective="sft",
            data_fields=_MC_FIELDS,
            source_field="train_sources",
            trains_on="questions",
            description="SFT on the gold answers",
        ),
        StageKind(
            name="dpo",
            inputs=("pair", "list"),
            default_objective="dpo",
            data_fields=_MC_FIELDS,
            source_field="train_sources",
            trains_on="questions",
            description="preference training on gold vs distractor pairs or ranked lists",
        ),
        StageKind(
            name="eval",
            inputs=(),
            default_objective=None,
            data_fields=(),
            source_field=None,
            trains_on="",
            description="no training: evaluate the init model",
        ),
    )
}


def stage_kind(name: str) -> StageKind:
    """The entry for ``stage.name``; a KeyError names the known kinds."""
    try:
        return STAGE_KINDS[name]
    except KeyError:
        raise KeyError(f"stage kind {name!r}: known kinds {list(STAGE_KINDS)}") from None


def trained_kinds() -> tuple[str, ...]:
    """Names of the kinds that produce weights."""
    return tuple(k.name for k in STAGE_KINDS.values() if k.trains)


def stage_for_input(input_kind: str) -> str:
    """The first stage kind that trains on ``input_kind`` (an InputKind value): where an objective of that
    kind runs (``pair`` -> ``dpo``)."""
    for k in STAGE_KINDS.values():
        if input_kind in k.inputs:
            return k.name
    raise KeyError(f"no stage kind trains on {input_kind!r} inputs")
