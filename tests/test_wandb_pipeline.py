"""W&B from the pipeline: a real 2-cell multirun with ``logger=wandb_offline``, read back from the offline run
files with :mod:`arc_lab.analysis.wandb_offline`.

Cells of one sweep share a W&B group (``logger.group``, default: the experiment name), the config is
logged flat (``objective.beta``, ``stage.optim.lr``: the W&B UI can pivot on objective, stage and beta),
the summary holds the final evaluation (``eval/<task>/acc``...) as in the run's ``metrics.json``, and the
training curves of every stage of the chain arrive at increasing steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arc_lab.analysis.wandb_offline import find_offline_runs, read_offline_run

BETAS = (0.1, 0.3)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Run ``objective.beta=0.1,0.3`` over CPT(2 steps) -> DPO(2 steps); return the sweep folder."""
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    state = tmp / "wandb_env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(state),
        WANDB_CONFIG_DIR=str(state / "config"),
        WANDB_CACHE_DIR=str(state / "cache"),
        WANDB_DATA_DIR=str(state / "data"),
    )
    args = [
        sys.executable,
        "-m",
        "arc_lab",
        "-m",
        "model=tiny_llama",
        "stage=dpo_cpu",
        "objective=dpo",
        f"objective.beta={','.join(map(str, BETAS))}",
        "stage.init=cpt_cpu",
        "stage.optim.max_steps=2",
        "stage.optim.log_every=1",
        "stage.init_overrides=['stage.optim.max_steps=2','stage.optim.log_every=1']",
        "data.max_items_per_source=8",
        "eval.limit=4",
        "name=wb_beta",
        "logger=wandb_offline",
        f"output_root={tmp / 'out'}",
    ]
    # cwd outside the repo: nothing may land in the working directory
    out = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert {p.name for p in tmp.iterdir()} <= {"out", "wandb_env"}  # no ./wandb
    (sweep_dir,) = (tmp / "out" / "multirun").glob("*/*")
    # W&B files only inside the cells' run folders
    cell_dirs = [sweep_dir / str(n) for n in range(len(BETAS))]
    wandb_paths = list((tmp / "out").rglob("*wandb*"))
    assert wandb_paths and all(any(p.is_relative_to(c) for c in cell_dirs) for p in wandb_paths)
    return sweep_dir


def cells(sweep_dir: Path) -> list[tuple[Path, dict, object]]:
    """(cell dir, its resolved config.yaml, its offline run) for each cell, in job order."""
    out = []
    for n in range(len(BETAS)):
        cell = sweep_dir / str(n)
        (run_file,) = find_offline_runs(cell)
        assert run_file.is_relative_to(cell / "wandb")
        out.append((cell, yaml.safe_load((cell / "config.yaml").read_text()), read_offline_run(run_file)))
    return out


@pytest.mark.slow
def test_cells_share_the_group_and_have_their_own_runs(sweep):
    runs = [run for _, _, run in cells(sweep)]
    assert {run.group for run in runs} == {"wb_beta"}  # logger.group unset: the experiment name
    assert {run.project for run in runs} == {"arc_lab"}
    assert len({run.run_id for run in runs}) == len(BETAS)
    assert all(run.run_id.startswith("wb_beta") and run.exit_code == 0 and not run.truncated for run in runs)
    assert all(run.name == "wb_beta:dpo-dpo" for run in runs)


@pytest.mark.slow
def test_config_is_logged_flat(sweep):
    from arc_lab.train.loggers import config_run_id, flatten_config

    seen = []
    for _, cfg, run in cells(sweep):
        assert run.config == flatten_config(cfg)  # every key of the resolved config, dot-joined
        assert run.run_id == config_run_id(cfg, prefix="wb_beta")
        assert run.config["objective.name"] == "dpo" and run.config["stage.name"] == "dpo"
        assert run.config["stage.optim.lr"] == pytest.approx(2e-4)
        assert run.config["stage.init"] == "cpt_cpu" and run.config["model.name"] == "tiny_llama"
        assert not any(isinstance(v, dict) and v for v in run.config.values())
        seen.append(run.config["objective.beta"])
    assert sorted(seen) == pytest.approx(sorted(BETAS))


@pytest.mark.slow
def test_summary_holds_the_final_evaluation(sweep):
    for cell, _, run in cells(sweep):
        metrics = json.loads((cell / "metrics.json").read_text())["builtin"]
        assert run.summary["eval/builtin/acc"] == pytest.approx(metrics["acc"])
        assert run.summary["eval/builtin/acc_norm"] == pytest.approx(metrics["acc_norm"])
        assert run.summary["eval/builtin/n"] == 4
        for label in ("base", "cpt", "cpt→dpo"):  # every model of the chain, for the before/after table
            assert f"chain/{label}/builtin/acc_norm" in run.summary
        assert run.summary["chain/cpt→dpo/builtin/acc"] == pytest.approx(metrics["acc"])


@pytest.mark.slow
def test_training_curves_of_the_chain_arrive_in_order(sweep):
    (first_cell, _, first), (_, _, second) = cells(sweep)
    rows = [r for r in first.history if any(k.endswith("/loss") for k in r)]
    # the first cell trained CPT (steps 1-2), then DPO, whose steps continue after CPT's (3-4)
    assert [(r["_step"], "cpt/loss" in r, "cpt→dpo/loss" in r) for r in rows] == [
        (1, True, False),
        (2, True, False),
        (3, False, True),
        (4, False, True),
    ]
    assert [r.get("cpt→dpo/step") for r in rows[2:]] == [1, 2]
    # the second cell reused CPT from the stage cache: only its DPO curve, at the same steps (after CPT's)
    rows2 = [r for r in second.history if any(k.endswith("/loss") for k in r)]
    assert [r["_step"] for r in rows2] == [3, 4] and all("cpt→dpo/loss" in r for r in rows2)
    # the run folder's metrics.jsonl has the same points
    lines = [json.loads(x) for x in (first_cell / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if not x.get("summary")] == [1, 2, 3, 4]
