"""Every registered objective runs end to end through the app (``stage=<its stage> objective=<name>``) on
a tiny real model and the built-in data: one shared loop, the branch chosen by the objective's declared
input kind, the loss finite and at its untrained value where the maths fixes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import compose, hydra_conf

from arc_lab.objectives import OBJECTIVES
from arc_lab.stage_kinds import stage_for_input


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("objective_runs")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_runs_through_the_app(root, name):
    from arc_lab.run.pipeline import run_pipeline
    from arc_lab.run.plan import plan_chain

    stage = stage_for_input(OBJECTIVES[name].input_kind.value) + "_cpu"
    overrides = [
        f"stage={stage}",
        f"objective={name}",
        "model=tiny_llama",
        "stage.optim.max_steps=2",
        "stage.optim.log_every=1",
        "stage.seq_len=128",
        "data.max_items_per_source=6",
        "eval.limit=4",
        "eval.before=false",
        f"output_root={root}",
    ]
    with hydra_conf():
        run_pipeline(plan_chain(compose(overrides)), root / "runs" / name)
    chain = json.loads((root / "runs" / name / "chain.json").read_text())
    (stage_entry,) = [c for c in chain if c["kind"] == "stage"]
    curve = [
        json.loads(line) for line in (Path(stage_entry["dir"]) / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in curve if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    if name == "dpo":  # policy == reference at step 1 (fresh LoRA): every log-ratio is 0, the loss ln 2
        assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    if name == "kto":  # the same at step 1: z0 = 0 and every answer's loss is lambda * (1 - σ(0))
        first = next(r for r in curve if "loss" in r)
        assert first["kl"] == pytest.approx(0.0, abs=1e-5)
        assert first["loss/desirable"] == pytest.approx(0.5, abs=1e-5)
        assert first["loss/undesirable"] == pytest.approx(0.3 * 0.5, abs=1e-5)
    metrics = json.loads((root / "runs" / name / "metrics.json").read_text())
    assert metrics["builtin"]["n"] == 4
    assert (Path(stage_entry["dir"]) / "model" / "config.json").is_file()  # merged, standalone
