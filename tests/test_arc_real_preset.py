"""``experiment=arc_real_cpu``: the seed's ablation on the real data, sized for a 2-core CPU.

The composition tests need no data; the smoke test runs the whole grid (6 rows x 2 evaluations) on a tiny
random model with tiny caps against ``../shared/data`` and is skipped where that folder is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, compose

from arc_lab.config import to_run_config

ROWS = [
    "real_cpu_base",
    "real_cpu_cpt",
    "real_cpu_dpo",
    "real_cpu_sft_dpo",
    "real_cpu_cpt_dpo",
    "real_cpu_cpt_simpo",
]


def _cfg(*overrides: str):
    return compose(["experiment=arc_real_cpu", *overrides])


def test_preset_sweeps_six_rows_and_two_evaluations(hydra_ctx):
    cfg = compose(["experiment=arc_real_cpu"], hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.chain.split(",") == ROWS
    assert params.eval.split(",") == ["arc_real_25shot", "arc_real_0shot"]
    from omegaconf import OmegaConf

    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${eval.num_fewshot}shot/seed${seed}/${hydra.job.num}"


@pytest.mark.parametrize(
    "evaluation,shots,sample", [("arc_real_25shot", 25, 300), ("arc_real_0shot", 0, None)]
)
def test_every_row_composes_with_the_stated_data_and_eval(hydra_ctx, evaluation, shots, sample):
    from arc_lab.run.plan import plan_chain

    for row in ROWS:
        cfg = _cfg(f"chain={row}", f"eval={evaluation}")
        run = to_run_config(cfg)
        assert run.model.name == "smollm2_135m"
        assert run.data.cpt_sources == ["sciq_support"] and run.data.max_cpt_texts == 1000
        assert (
            run.data.train_sources == ["arc_challenge", "arc_easy"] and run.data.max_items_per_source == 150
        )
        assert run.data.decontaminate == "drop"
        assert run.eval.tasks == ["arc_challenge"] and run.eval.num_fewshot == shots
        assert run.eval.sample == sample and run.eval.limit is None
        plan_chain(cfg)


def test_cpt_is_trained_once_for_the_rows_that_build_on_it(hydra_ctx, shared_data_dir):
    """The CPT row's stage and the init of CPT→DPO / CPT→SimPO have the same stage hash (one CPT); the
    hash covers the content of the data read, so it needs the data."""
    from arc_lab.run.build import stage_inputs
    from arc_lab.run.plan import plan_chain, root_ref, stage_hash

    def key(c):
        return stage_hash(c, root_ref(c).key, stage_inputs(c))

    data = f"data.data_dir={shared_data_dir}"
    cpt = plan_chain(_cfg("chain=real_cpu_cpt", data))
    hashes = {key(cpt[0])}
    for row in ("real_cpu_cpt_dpo", "real_cpu_cpt_simpo"):
        plan = plan_chain(_cfg(f"chain={row}", data))
        assert [c.stage.name for c in plan] == ["cpt", "dpo"]
        hashes.add(key(plan[0]))
    assert len(hashes) == 1
    assert [c.stage.name for c in plan_chain(_cfg("chain=real_cpu_sft_dpo"))] == ["sft", "dpo"]


SMOKE = [
    "model=tiny_llama",
    "data.max_items_per_source=4",
    "data.max_cpt_texts=20",
    "stage.optim.max_steps=1",
    "stage.optim.warmup_ratio=0",  # else the one step has lr 0 and no row differs from base
    "stage.init_overrides=['stage.optim.max_steps=1','stage.optim.warmup_ratio=0']",
    "eval.limit=12",
    "eval.sample=3",
]


def run_smoke(data_dir: Path, tmp_path: Path) -> Path:
    """The grid on a tiny model, then the report of the 25-shot cells against base and against DPO."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "ARC_LAB_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "arc_lab", "-m", "experiment=arc_real_cpu", *SMOKE]
    cmd += [f"output_root={tmp_path / 'out'}", f"hydra.sweep.dir={sweep}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-4000:]
    for shots in ("25shot", "0shot"):
        cells = sorted(p.parent for p in (sweep / shots / "seed0").glob("*/metrics.json"))
        assert len(cells) == 6, cells
    for baseline in ("base", "dpo"):
        rep = subprocess.run(
            [
                sys.executable,
                "-m",
                "arc_lab.analysis.report",
                str(sweep / "25shot"),
                "--task",
                "arc_challenge",
                "--baseline",
                baseline,
                "--out",
                str(tmp_path / f"vs_{baseline}"),
                "--n-resamples",
                "200",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert rep.returncode == 0, rep.stderr[-3000:]
    return sweep


@pytest.mark.slow
def test_smoke_grid_runs_end_to_end_on_a_tiny_model(shared_data_dir, tmp_path):
    import json

    sweep = run_smoke(shared_data_dir, tmp_path)
    fingerprints = {}
    for cell in (sweep / "25shot" / "seed0").glob("*/"):
        chain = json.loads((cell / "chain.json").read_text())
        label = [c for c in chain if c["kind"] == "eval"][-1]["label"]
        metrics = json.loads((cell / "metrics.json").read_text())
        assert (metrics["arc_challenge"]["n"], metrics["arc_challenge"]["num_fewshot"]) == (3, 25)
        assert metrics["arc_challenge"]["sample"] == 3
        fingerprints[label] = metrics["model_fingerprint"]
        if label != "base":  # every trained stage records its data, decontamination included
            data = json.loads((cell / "data.json").read_text())
            assert all(d.get("decontamination", {"mode": "drop"})["mode"] == "drop" for d in data.values())
    assert set(fingerprints) == {"base", "cpt", "dpo", "sft→dpo", "cpt→dpo", "cpt→dpo[simpo]"}
    assert len(set(fingerprints.values())) == 6  # every row is a different model
    report = (tmp_path / "vs_dpo" / "report.md").read_text()
    assert "Paired comparison vs baseline `dpo`" in report and "cpt→dpo" in report
