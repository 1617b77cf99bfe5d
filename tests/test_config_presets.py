"""Every option of every config group composes and validates, as ``python -m arc_lab group=option`` would
before any work (Hydra compose + ``to_run_config`` + ``plan_chain``; nothing is trained or loaded).

Options are found by listing ``conf/<group>/*.yaml``, so a new preset is covered without editing this file.
"""

from __future__ import annotations

import pytest
from helpers import CONF, compose, hydra_conf
from omegaconf import OmegaConf

from arc_lab.config import RunConfig
from arc_lab.objectives import OBJECTIVES
from arc_lab.stage_kinds import STAGE_KINDS, stage_for_input

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("*.yaml"))]


@pytest.fixture(scope="module")
def hydra_ctx():
    """One Hydra context for the module's many compositions."""
    with hydra_conf():
        yield


def validate(overrides: list[str]) -> RunConfig:
    """What ``python -m arc_lab`` does before any work: compose, validate, plan the chain (which composes
    the stage.init presets of a chain)."""
    from arc_lab.run.plan import plan_chain

    return plan_chain(compose(overrides))[-1]


def objective_for(stage_name: str) -> str:
    """The objective a stage kind trains with when composed as an init (clm, sft, dpo)."""
    return STAGE_KINDS[stage_name].default_objective


def test_every_group_is_found():
    expected = {"model", "data", "stage", "objective", "eval", "logger", "launcher", "experiment", "chain"}
    assert expected | {"hparams_search"} <= set(GROUPS)
    assert all(any(g == group for g, _ in OPTIONS) for group in GROUPS)  # no empty group


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(hydra_ctx, group, option):
    if group == "objective":  # on the stage kind that trains on its inputs
        name = OmegaConf.load(CONF / group / f"{option}.yaml").name
        run = validate([f"stage={stage_for_input(OBJECTIVES[name].input_kind.value)}", f"objective={option}"])
        assert run.objective["name"] == name
    elif group == "stage":  # with an objective that fits it (the default, dpo, fits dpo and eval stages)
        stage_name = compose([f"stage={option}"]).stage.name
        extra = [f"objective={objective_for(stage_name)}"] if STAGE_KINDS[stage_name].trains else []
        validate([f"stage={option}", *extra])
    else:  # experiment, chain and hparams_search presets validate as composed
        validate([f"{group}={option}"])
