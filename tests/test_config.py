"""Experiments with the chains they sweep compose, plan and validate; bad overrides fail before any work.

Every option of every config group on its own: tests/test_config_presets.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import CONF, ONE_LAYER, compose, load_tiny

from arc_lab.config import ConfigError, to_run_config
from arc_lab.objectives import OBJECTIVES


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def run_config(overrides: list[str]):
    cfg = compose(overrides)
    return cfg, to_run_config(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_and_chain_composes(hydra_ctx, experiment):
    from arc_lab.run.plan import plan_chain

    cfg = compose([f"experiment={experiment}"], hydra_config=True)
    sweep = cfg.hydra.sweeper.get("params") or {}
    chains = str(sweep.get("chain", "")).split(",") if "chain" in sweep else [None]
    for chain in chains:
        overrides = [f"experiment={experiment}"] + ([f"chain={chain}"] if chain else [])
        cfg, run = run_config(overrides)
        plan = plan_chain(cfg)
        assert plan[-1] == run
        for parent in plan[:-1]:
            assert parent.model == run.model and parent.data == run.data  # same model and data config


def test_quickstart_chain_is_cpt_then_dpo(hydra_ctx):
    from arc_lab.run.plan import plan_chain

    cfg, _ = run_config(["experiment=quickstart"])
    plan = plan_chain(cfg)
    assert [(c.stage.name, c.objective["name"]) for c in plan] == [("cpt", "clm"), ("dpo", "dpo")]
    assert plan[0].stage.lora.enabled is False and plan[1].stage.lora.enabled is True


def test_seed_repro_has_the_recipe_settings(hydra_ctx):
    from arc_lab.run.plan import plan_chain

    cfg, run = run_config(["experiment=seed_repro", "chain=recipe_cpt_dpo"])
    cpt, dpo = plan_chain(cfg)
    assert run.model.path == "mistralai/Mistral-7B-v0.1"
    assert (cpt.stage.seq_len, cpt.stage.optim.epochs, cpt.stage.optim.lr) == (4096, 3, 1e-5)
    assert cpt.stage.lora.enabled is False and cpt.stage.optim.precision == "bf16"
    assert (dpo.stage.lora.r, dpo.stage.lora.alpha, len(dpo.stage.lora.target_modules)) == (64, 128, 7)
    assert (dpo.objective["beta"], dpo.stage.optim.lr, dpo.stage.seq_len, dpo.stage.merge_dtype) == (
        0.1,
        5e-6,
        512,
        "float16",
    )
    assert run.eval.tasks == ["arc_challenge"] and run.eval.num_fewshot == 25


def test_simpo_presets_state_gamma_beta_ratio(hydra_ctx):
    _, base = run_config(["objective=simpo_mistral_base"])
    _, inst = run_config(["objective=simpo_mistral_instruct"])
    assert (base.objective["beta"], base.objective["gamma_beta_ratio"]) == (2.0, 0.8)
    assert (inst.objective["beta"], inst.objective["gamma_beta_ratio"]) == (2.5, 0.1)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["stage=cpt"], "objective=dpo trains on 'pair' inputs, but stage=cpt"),
        (["stage=cpt", "objective=dpo"], "Objectives that fit stage=cpt: ['clm']"),
        (["objective.beta=abc"], "could not be converted to Float"),
        (["stage.optim.scheduler=exp"], "stage.optim.scheduler='exp': expected one of"),
        (["model.dtype=float8"], "model.dtype='float8'"),
        (["eval.tasks=[hellaswag]"], "eval.tasks[]='hellaswag'"),
        (["stage.init=nope"], "stage.init='nope'"),
    ],
)
def test_bad_overrides_fail_with_the_key(hydra_ctx, overrides, message):
    from arc_lab.run.plan import plan_chain

    with pytest.raises(ConfigError) as e:
        cfg, _ = run_config(overrides)
        plan_chain(cfg)
    assert message in str(e.value)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arc_lab", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cli_prints_composed_config():
    out = run_cli("stage=dpo", "objective=simpo", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "name: simpo" in out.stdout and "gamma_beta_ratio" in out.stdout


@pytest.mark.slow
def test_cli_bad_overrides_exit_before_work(tmp_path):
    unknown = run_cli("objective=nope", f"output_root={tmp_path}")
    assert unknown.returncode != 0
    for name in OBJECTIVES:  # Hydra lists the available options of the group
        assert name in unknown.stderr
    misfit = run_cli("stage=cpt", "objective=dpo", f"output_root={tmp_path}")
    assert misfit.returncode == 2
    assert "stage=cpt builds ['packed']" in misfit.stderr
    # Hydra made the run folder (.hydra/, the log) but no stage, evaluation or metrics was started
    assert not (tmp_path / "stages").exists() and not (tmp_path / "evals").exists()
    assert not list(tmp_path.rglob("metrics.json"))


def test_hparams_search_composes_with_the_optuna_sweeper(hydra_ctx):
    cfg = compose(["experiment=quickstart", "hparams_search=dpo_optuna"], hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_.lower() and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"objective.beta", "stage.optim.lr"}
    assert cfg.eval.split == "validation"  # the search never sees the test split


def test_eval_split_validation_scores_the_validation_split(tmp_path):
    from arc_lab.data.loaders import dataset_fingerprint
    from arc_lab.eval import run_eval

    model, tok = load_tiny("tiny_llama", **ONE_LAYER)
    kw = dict(tasks=["builtin"], num_fewshot=0, batch_size=8, progress=False)
    val = run_eval("ours", model, tok, split="validation", **kw)["builtin"]
    test = run_eval("ours", model, tok, **kw)["builtin"]
    assert (val["split"], val["n"]) == ("validation", 32) and (test["split"], test["n"]) == ("test", 96)
    assert val["dataset_fingerprint"] == dataset_fingerprint("builtin", "validation")
    assert val["dataset_fingerprint"] != test["dataset_fingerprint"]
