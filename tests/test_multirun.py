"""A resumable multirun: a real ``python -m arc_lab -m`` grid of 3 cells on a tiny model, SIGKILLed while
the third cell runs and started again with the same command.

The rerun must skip what the first attempt finished (stages and evaluations come from the cache, nothing
is retrained), complete the rest, and train the CPT stage once for the two cells that build on it. Each
cell's W&B run id is derived from its config, so the rerun of a cell continues the same (offline) run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arc_lab.analysis.wandb_offline import find_offline_runs, read_offline_run

REPO = Path(__file__).resolve().parents[1]
CELLS = ["cpu_base", "cpu_cpt", "cpu_cpt_dpo"]


def grid(root: Path, log: Path) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "arc_lab",
        "-m",
        "experiment=ablation_cpu",
        "model=tiny_llama",
        f"hydra.sweeper.params.chain='{','.join(CELLS)}'",
        "stage.optim.max_steps=1",
        "stage.init_overrides=['stage.optim.max_steps=1']",
        "eval.limit=4",
        "data.max_items_per_source=8",
        "logger.wandb=offline",
        f"output_root={root}",
    ]
    state = root / "wandb_env"
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(state),
        "WANDB_CONFIG_DIR": str(state / "config"),
        "WANDB_CACHE_DIR": str(state / "cache"),
        "WANDB_DATA_DIR": str(state / "data"),
    }
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def sweep_dirs(root: Path) -> list[Path]:
    """Sweep folders (one per attempt), oldest first."""
    return sorted((root / "multirun").glob("*/*"), key=lambda p: p.stat().st_mtime_ns)


def run_ids(cell: Path) -> list[str]:
    """W&B run ids of a cell's offline runs, from the ``offline-run-<time>-<id>`` folder names."""
    return [p.name.split("-", 3)[-1] for p in sorted((cell / "wandb").glob("offline-run-*"))]


@pytest.mark.slow
def test_killed_grid_resumes_skipping_finished_cells(tmp_path):
    # -- attempt 1: kill the whole process group once the third cell has started training its DPO stage
    first = grid(tmp_path, tmp_path / "first.log")
    deadline = time.monotonic() + 240

    def dpo_started() -> bool:
        return (
            bool(list(tmp_path.glob("multirun/*/*/2/wandb/offline-run-*/run-*.wandb")))
            and len(list(tmp_path.glob("stages/*/provenance.json"))) == 2
        )

    try:
        while not dpo_started():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the third cell did not start its DPO stage within 240 s"
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    (sweep1,) = sweep_dirs(tmp_path)
    assert (sweep1 / "0" / "metrics.json").is_file() and (sweep1 / "1" / "metrics.json").is_file()
    (cpt_dir,) = [d for d in (tmp_path / "stages").iterdir() if (d / "DONE").is_file()]
    (dpo_dir,) = [d for d in (tmp_path / "stages").iterdir() if d != cpt_dir]  # unfinished
    cpt_mtime = (cpt_dir / "model" / "model.safetensors").stat().st_mtime_ns
    ids1 = {n: run_ids(sweep1 / str(n)) for n in range(3)}
    assert all(len(ids) == 1 for ids in ids1.values()), ids1
    assert len({ids[0] for ids in ids1.values()}) == 3  # one run per cell

    # -- attempt 2: the same command
    time.sleep(1.1)  # a new sweep folder (its name has the time to the second)
    second = grid(tmp_path, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    sweep2 = sweep_dirs(tmp_path)[-1]
    assert sweep2 != sweep1
    chains = {n: json.loads((sweep2 / str(n) / "chain.json").read_text()) for n in range(3)}

    # finished cells: everything from the cache, same numbers
    for n in (0, 1):
        assert all(c["cached"] for c in chains[n]), chains[n]
        assert json.loads((sweep2 / str(n) / "metrics.json").read_text()) == json.loads(
            (sweep1 / str(n) / "metrics.json").read_text()
        )
    # the interrupted cell: CPT shared with cell 1, its DPO stage completed
    stages = [c for c in chains[2] if c["kind"] == "stage"]
    assert [c["label"] for c in stages] == ["cpt", "cpt→dpo"]
    assert stages[0]["cached"] and stages[0]["hash"] == cpt_dir.name
    assert all(c["cached"] for c in chains[2] if c["kind"] == "eval" and c["label"] != "cpt→dpo")
    assert (sweep2 / "2" / "metrics.json").is_file()

    # CPT trained once (by cell 1 of attempt 1), never again; one DPO stage
    assert (cpt_dir / "model" / "model.safetensors").stat().st_mtime_ns == cpt_mtime
    assert sorted(d.name for d in (tmp_path / "stages").iterdir()) == sorted([cpt_dir.name, dpo_dir.name])
    assert stages[1]["hash"] == dpo_dir.name and not stages[1]["cached"]  # the unfinished stage, completed
    assert (dpo_dir / "DONE").is_file()
    assert "stage cache miss: training cpt " not in log
    assert log.count("stage cache miss") == 1 and log.count("stage cache hit") == 2
    assert "eval cache hit" in log

    # W&B: each cell of the rerun continues the run id of its first attempt
    for n in range(3):
        (run_file,) = find_offline_runs(sweep2 / str(n))
        run = read_offline_run(run_file)
        assert run.run_id == ids1[n][0], n
        assert run.group == "ablation_cpu" and run.exit_code == 0
    # the rerun cell's DPO curve continues after the (cached) CPT's step, as in an uninterrupted run
    dpo_steps = [
        r["_step"]
        for r in read_offline_run(find_offline_runs(sweep2 / "2")[0]).history
        if "cpt→dpo/loss" in r
    ]
    assert dpo_steps == [2]
