"""``seed=N`` reaches every trained stage of a chain (init stages included); a stage's own
``stage.optim.seed`` wins; the default seed keeps the stage hashes that caches were written under; the
evaluation key does not depend on the seed (the base model is scored once across seeds)."""

from __future__ import annotations

import pytest
from helpers import compose

from arc_lab.run import build
from arc_lab.run.plan import ModelRef, plan_chain, root_ref, stage_hash

pytestmark = pytest.mark.usefixtures("hydra_ctx")


def _plan(*overrides: str):
    return plan_chain(compose(["experiment=quickstart_controls", *overrides]))


def _hashes(plan) -> list[str]:
    ref, out = root_ref(plan[0]), []
    for run in plan:
        h = stage_hash(run, ref.key, build.stage_inputs(run))
        out.append(h)
        ref = ModelRef(key=f"stage:{h}", label=run.stage.name)
    return out


def test_seed_reaches_every_stage_of_the_chain():
    plan = _plan("chain=cpu_cpt_dpo", "seed=2")
    assert [r.stage.name for r in plan] == ["cpt", "dpo"]
    assert [r.stage.optim.seed for r in plan] == [2, 2]
    assert all(r.seed == 2 for r in plan)


def test_a_stage_s_own_seed_wins():
    plan = _plan(
        "chain=cpu_cpt_dpo", "seed=2", "stage.optim.seed=5", "stage.init_overrides=['stage.optim.seed=7']"
    )
    assert [r.stage.optim.seed for r in plan] == [7, 5]


def test_default_seed_equals_the_old_explicit_zero_and_other_seeds_differ():
    default = _hashes(_plan("chain=cpu_cpt_dpo"))
    # what the presets meant before the seed axis: every stage at optim.seed 0, run seed 0
    explicit = _hashes(
        _plan("chain=cpu_cpt_dpo", "stage.optim.seed=0", "stage.init_overrides=['stage.optim.seed=0']")
    )
    assert default == explicit
    other = _hashes(_plan("chain=cpu_cpt_dpo", "seed=1"))
    assert all(a != b for a, b in zip(default, other, strict=True))


def test_the_eval_key_does_not_depend_on_the_seed():
    a, b = _plan("chain=cpu_base")[-1], _plan("chain=cpu_base", "seed=3")[-1]
    assert build.eval_key(a) == build.eval_key(b) and root_ref(a).key == root_ref(b).key


def test_quickstart_seeds_sweeps_three_seeds_over_six_rows():
    cfg = compose(["experiment=quickstart_seeds"], hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.seed == "0,1,2"
    assert params.chain.split(",") == [
        "cpu_base",
        "cpu_base_kshot",
        "cpu_dpo",
        "cpu_cpt",
        "cpu_cpt_dpo",
        "cpu_cpt_sft",
    ]
    assert list(cfg.eval.tasks) == ["builtin", "builtin_cloze"]


def test_a_negative_seed_is_one_line():
    from arc_lab.config import ConfigError

    with pytest.raises(ConfigError, match=r"stage.optim.seed=-1: expected an integer >= 0"):
        _plan("chain=cpu_dpo", "stage.optim.seed=-1")
