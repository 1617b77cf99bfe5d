"""The stage cache on real tiny models: reuse, invalidation, run-folder contents and resuming a killed stage.

One module-scoped output root holds a baseline ``base -> cpt -> cpt→dpo`` run (1 optimizer step per stage,
4 eval docs); each test reruns the app in-process (Hydra compose API + :func:`run_pipeline`) with one change
and checks which stages and evaluations were trained/evaluated again. The resume test runs the CLI in a
subprocess and SIGKILLs it once a training checkpoint exists.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO, compose, hydra_conf

#: tiny model, 8 questions per source (24 DPO pairs), 4 eval docs
COMMON = ["model=tiny_llama", "eval.limit=4", "data.max_items_per_source=8"]
#: CPT (1 step) then DPO (1 step) on top of it
CHAIN = [
    "stage=dpo_cpu",
    "objective=dpo",
    "stage.init=cpt_cpu",
    "stage.optim.max_steps=1",
    "stage.init_overrides=['stage.optim.max_steps=1']",
]


@dataclass
class Run:
    run_dir: Path
    log: str
    chain: list[dict]
    #: (stage dirs, eval dirs) right after this run (set for the baseline)
    dirs_after: tuple[set[str], set[str]] | None = None

    def stages_cached(self) -> list[bool]:
        return [c["cached"] for c in self.chain if c["kind"] == "stage"]

    def evals_cached(self) -> list[bool]:
        return [c["cached"] for c in self.chain if c["kind"] == "eval"]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_app(root: Path, name: str, *overrides: str) -> Run:
    """Compose ``config`` with ``overrides`` and run the pipeline into ``<root>/runs/<name>``."""
    from arc_lab.run.pipeline import run_pipeline
    from arc_lab.run.plan import plan_chain

    cfg = compose([*COMMON, *overrides, f"output_root={root}"])
    plan = plan_chain(cfg)
    run_dir = root / "runs" / name
    handler, lg = _Collect(), logging.getLogger("arc_lab")
    old_level = lg.level
    lg.addHandler(handler)
    lg.setLevel(logging.INFO)
    try:
        run_pipeline(plan, run_dir)
    finally:
        lg.removeHandler(handler)
        lg.setLevel(old_level)
    return Run(run_dir, "\n".join(handler.lines), json.loads((run_dir / "chain.json").read_text()))


def snapshot(root: Path) -> dict[str, int | None]:
    """Every stage dir -> mtime of its model weights (None when unfinished)."""
    out = {}
    for d in sorted((root / "stages").iterdir()):
        weights = d / "model" / "model.safetensors"
        out[d.name] = weights.stat().st_mtime_ns if weights.is_file() else None
    return out


def eval_dirs(root: Path) -> set[str]:
    return {d.name for d in (root / "evals").iterdir()}


@pytest.fixture(scope="module")
def hydra_ctx():
    """One Hydra context for the module-scoped baseline run and the reruns."""
    with hydra_conf():
        yield


@pytest.fixture(scope="module")
def baseline(hydra_ctx, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run = run_app(root, "baseline", *CHAIN)
    run.dirs_after = (set(snapshot(root)), eval_dirs(root))
    return root, run


@pytest.mark.slow
def test_baseline_trains_both_stages_and_evaluates_three_models(baseline):
    root, run = baseline
    assert run.stages_cached() == [False, False]
    assert [c["label"] for c in run.chain if c["kind"] == "eval"] == ["base", "cpt", "cpt→dpo"]
    stages, evals = run.dirs_after
    assert len(stages) == 2 and len(evals) == 3
    assert run.log.count("stage cache miss") == 2


@pytest.mark.slow
def test_identical_rerun_reuses_stages_and_evals(baseline):
    root, first = baseline
    before, evals_before = snapshot(root), eval_dirs(root)
    again = run_app(root, "again", *CHAIN)
    assert again.stages_cached() == [True, True]
    assert again.evals_cached() == [True, True, True]
    assert again.log.count("stage cache hit") == 2 and "stage cache miss" not in again.log
    assert again.log.count("eval cache hit") == 3
    assert snapshot(root) == before  # no new stage dir, weights not rewritten
    assert eval_dirs(root) == evals_before
    assert json.loads((again.run_dir / "metrics.json").read_text()) == json.loads(
        (first.run_dir / "metrics.json").read_text()
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "change,retrained",
    [
        # the DPO loss changes: CPT is reused, DPO retrains
        (["objective.beta=0.3"], [False, True]),
        # the CPT init's lr or seed changes: CPT retrains, so does DPO (its init changed)
        # (an lr other than cpt_cpu's 2e-4)
        (["stage.init_overrides=['stage.optim.max_steps=1','stage.optim.lr=3e-4']"], [True, True]),
        (["stage.init_overrides=['stage.optim.max_steps=1','stage.optim.seed=7']"], [True, True]),
        # fewer DPO questions: CPT (which reads only the prose) is reused
        (["data.max_items_per_source=6"], [False, True]),
        # fewer CPT documents: CPT retrains, and DPO on top of it
        (["data.max_cpt_texts=20"], [True, True]),
        # a different DPO seed
        (["stage.optim.seed=5"], [False, True]),
    ],
    ids=["dpo_beta", "cpt_lr", "cpt_seed", "dpo_items", "cpt_texts", "dpo_seed"],
)
def test_a_change_that_matters_retrains_only_what_changed(baseline, change, retrained):
    root, first = baseline
    before = snapshot(root)
    run = run_app(root, "matters-" + "-".join(change).replace("/", "_"), *CHAIN, *change)
    assert run.stages_cached() == [not r for r in retrained]
    after = snapshot(root)
    new = set(after) - set(before)
    assert len(new) == sum(retrained)
    old_hashes = [c["hash"] for c in first.chain if c["kind"] == "stage"]
    new_hashes = [c["hash"] for c in run.chain if c["kind"] == "stage"]
    for old, h, r in zip(old_hashes, new_hashes, retrained, strict=True):
        assert (h != old) == r
        assert (h in new) == r
    assert all(after[h] == before[h] for h in before)  # reused weights untouched
    assert run.log.count("stage cache miss") == sum(retrained)


@pytest.mark.slow
@pytest.mark.parametrize(
    "change,new_evals",
    [
        (
            [
                "stage.optim.log_every=1",
                "stage.init_overrides=['stage.optim.max_steps=1','stage.optim.log_every=1']",
            ],
            0,
        ),
        (
            [
                "stage.optim.save_every=1",
                "stage.init_overrides=['stage.optim.max_steps=1','stage.optim.save_every=1']",
            ],
            0,
        ),
        (["eval.before=false"], 0),
        (["eval.limit=3"], 3),  # the evaluation itself changes; the weights do not
        (["eval.batch_size=2"], 3),
    ],
    ids=["log_every", "save_every", "eval_before", "eval_limit", "eval_batch_size"],
)
def test_a_change_that_does_not_matter_reuses_the_stages(baseline, change, new_evals):
    root, _ = baseline
    before, evals_before = snapshot(root), eval_dirs(root)
    run = run_app(root, "same-" + "-".join(change).replace("/", "_"), *CHAIN, *change)
    assert run.stages_cached() == [True, True]
    assert "stage cache miss" not in run.log
    assert snapshot(root) == before
    assert len(eval_dirs(root) - evals_before) == new_evals


@pytest.mark.slow
def test_run_folder_is_self_describing(baseline):
    root, run = baseline
    d = run.run_dir
    for name in ("config.yaml", "provenance.json", "chain.json", "metrics.json", "summary.md", "MODEL"):
        assert (d / name).is_file(), name
    prov = json.loads((d / "provenance.json").read_text())
    assert len(prov["revision"]["commit"]) == 40 and isinstance(prov["revision"]["dirty"], bool)
    assert "torch" in prov["libraries"]
    cfg_text = (d / "config.yaml").read_text()
    assert "tiny_llama" in cfg_text and "init: cpt_cpu" in cfg_text
    # chain.json: every stage and evaluation with its cache dir
    assert [c["kind"] for c in run.chain] == ["eval", "stage", "eval", "stage", "eval"]
    assert [c["steps"] for c in run.chain if c["kind"] == "stage"] == [1, 1]
    assert all(Path(c["dir"]).is_dir() for c in run.chain)
    metrics = json.loads((d / "metrics.json").read_text())
    assert len(metrics["model_fingerprint"]) >= 8
    task = metrics["builtin"]
    assert task["n"] == 4 and 0 <= task["acc"] <= 1 and 0 <= task["acc_norm"] <= 1
    assert task["dataset_fingerprint"]
    rows = [json.loads(line) for line in (d / "samples" / "builtin.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert {"doc_id", "target", "loglikelihoods", "pred", "pred_norm", "acc", "acc_norm"} <= set(row)
        assert len(row["loglikelihoods"]) == len(row["choice_chars"])
    assert sum(r["acc_norm"] for r in rows) / 4 == pytest.approx(task["acc_norm"])
    assert Path((d / "MODEL").read_text().strip()) == Path(run.chain[-2]["dir"]).resolve() / "model"
    # stage dirs: resolved config, provenance with the hash, data description with fingerprints
    cpt_dir, dpo_dir = (Path(c["dir"]) for c in run.chain if c["kind"] == "stage")
    for sd in (cpt_dir, dpo_dir):
        assert (sd / "DONE").read_text().strip() == sd.name
        assert json.loads((sd / "provenance.json").read_text())["stage_hash"] == sd.name
        assert (sd / "config.yaml").is_file() and (sd / "metrics.jsonl").is_file()
        assert (sd / "model" / "config.json").is_file()
        assert not (sd / "train" / "checkpoints").exists()  # removed once model/ is written
    cpt_data = json.loads((cpt_dir / "data.json").read_text())
    assert cpt_data["kind"] == "packed" and cpt_data["fingerprint"]
    dpo_data = json.loads((dpo_dir / "data.json").read_text())
    assert dpo_data["kind"] == "pair" and dpo_data["questions"] == 8 and dpo_data["fingerprints"]["builtin"]
    # a trained model's identity: its stage hash and the digest of its weights
    assert json.loads((dpo_dir / "provenance.json").read_text())["init"].startswith(f"stage:{cpt_dir.name}:")
    # the run folder itself names what every stage of its chain trained on
    assert json.loads((d / "data.json").read_text()) == {"cpt": cpt_data, "cpt→dpo": dpo_data}


# ------------------------------------------------------------------------------------------ resume
def _cli(root: Path, log: Path) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "arc_lab",
        *COMMON,
        "stage=cpt_cpu",
        "objective=clm",
        "stage.seq_len=64",
        "stage.optim.max_steps=6",
        "stage.optim.save_every=1",
        "stage.optim.log_every=1",
        "eval.before=false",
        f"output_root={root}",
    ]
    return subprocess.Popen(
        args, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.mark.slow
def test_a_killed_stage_resumes_from_its_checkpoint(tmp_path):
    first = _cli(tmp_path, tmp_path / "first.log")
    deadline = time.monotonic() + 120
    try:
        while not list(tmp_path.glob("stages/*/train/checkpoints/step-*")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    (stage_dir,) = (tmp_path / "stages").iterdir()
    assert not (stage_dir / "DONE").exists()

    second = _cli(tmp_path, tmp_path / "second.log")
    assert second.wait(timeout=180) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert "resuming from" in log and "stage cache miss" in log
    assert [p.name for p in (tmp_path / "stages").iterdir()] == [stage_dir.name]  # same hash, same dir
    train = json.loads((stage_dir / "train.json").read_text())
    assert train["resumed_from"] >= 1 and train["steps"] == 6
    assert (stage_dir / "DONE").is_file() and not (stage_dir / "train" / "checkpoints").exists()
    runs = list((tmp_path / "runs").glob("*/*/metrics.json"))
    assert len(runs) == 1  # only the second attempt finished its run folder
