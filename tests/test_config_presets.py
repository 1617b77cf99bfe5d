"""Every option of every config group composes and validates, as ``python -m arc_lab group=option`` would
before any work (Hydra compose + ``to_run_config`` + ``plan_chain``; nothing is trained or loaded).

Options are found by listing ``conf/<group>/*.yaml``, so a new preset is covered without editing this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from arc_lab.config import RunConfig, register_configs, to_run_config
from arc_lab.objectives import OBJECTIVES, InputKind

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("*.yaml"))]
#: the stage kind that trains on each objective input kind
STAGE_OF_KIND = {
    InputKind.PACKED: "cpt",
    InputKind.ANSWER: "sft",
    InputKind.PAIR: "dpo",
    InputKind.LIST: "dpo",
}

register_configs()


@pytest.fixture(scope="module")
def hydra_ctx():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def validate(overrides: list[str]) -> RunConfig:
    """What ``python -m arc_lab`` does before any work: compose, validate, plan the chain."""
    from arc_lab.pipeline import plan_chain

    cfg = compose(config_name="config", overrides=overrides)
    run = to_run_config(cfg)
    plan_chain(cfg)  # composes the stage.init presets of a chain
    return run


def objective_for(stage_name: str) -> str:
    """The first registered objective that a stage kind trains with (clm, sft, dpo)."""
    return next(n for n, c in OBJECTIVES.items() if STAGE_OF_KIND[c.input_kind] == stage_name)


def test_every_group_is_found():
    expected = {"model", "data", "stage", "objective", "eval", "logger", "launcher", "experiment", "chain"}
    assert expected | {"hparams_search"} <= set(GROUPS)
    assert all(any(g == group for g, _ in OPTIONS) for group in GROUPS)  # no empty group


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(hydra_ctx, group, option):
    if group == "objective":  # on the stage kind that trains on its inputs
        name = OmegaConf.load(CONF / group / f"{option}.yaml").name
        run = validate([f"stage={STAGE_OF_KIND[OBJECTIVES[name].input_kind]}", f"objective={option}"])
        assert run.objective["name"] == name
    elif group == "stage":  # with an objective that fits it (the default, dpo, fits dpo and eval stages)
        stage_name = compose(config_name="config", overrides=[f"stage={option}"]).stage.name
        extra = [] if stage_name == "eval" else [f"objective={objective_for(stage_name)}"]
        validate([f"stage={option}", *extra])
    else:  # experiment, chain and hparams_search presets validate as composed
        validate([f"{group}={option}"])
