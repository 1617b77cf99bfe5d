"""DeepSpeed ZeRO-2 stepper: config resolution, presets, and real CPU runs in 1 and 2 processes.

The real runs happen in subprocesses (a DeepSpeed engine initialises torch.distributed, which should not
leak into the pytest process). This file doubles as the worker script::

    python tests/test_deepspeed.py <out_dir>                                   # 1 process
    torchrun --standalone --nproc_per_node=2 tests/test_deepspeed.py <out_dir>   # 2 processes

The worker trains a tiny random Llama with LoRA for a few ZeRO-2 steps, trains an identical copy with the
plain-torch stepper on the same global batches, and writes what it saw to ``<out_dir>/rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import load_tiny
from numerics import ADAM_RMS_TOL, adam_rms, check_losses  # tests/numerics.py: why these bounds

from arc_lab.train.deepspeed_engine import (
    DeepSpeedConfigError,
    ensure_distributed_env,
    make_stepper_factory,
    resolve_config,
)
from arc_lab.train.stepper import torch_stepper

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "conf" / "launcher" / "deepspeed_zero2.yaml"
STEPS, GRAD_ACCUM, GLOBAL_MICRO = 4, 2, 2  # optimizer steps; micro-batches per step; rows per micro-batch
LOOP_LR, LOOP_STEPS = 5e-2, 3  # the shared-loop runs (constant schedule, no warm-up)


def _preset() -> dict:
    return yaml.safe_load(PRESET.read_text())["stage"]["deepspeed"]


# ---------------------------------------------------------------------------------------- config
def test_preset_resolves_from_optim():
    cfg = resolve_config(
        _preset(), micro_batch_size=8, grad_accum=4, max_grad_norm=1.0, precision="bf16", world_size=4
    )
    assert cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["train_batch_size"] == 8 * 4 * 4
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    assert cfg["zero_optimization"]["stage"] == 2
    assert "optimizer" not in cfg and "scheduler" not in cfg
    fp32 = resolve_config(_preset(), micro_batch_size=1, grad_accum=1, max_grad_norm=0.0, precision="fp32")
    assert fp32["bf16"] == {"enabled": False} and fp32["gradient_clipping"] == 0.0
    assert _preset()["train_micro_batch_size_per_gpu"] == "auto"  # the input is not modified


def test_resolve_refuses_contradictions(tmp_path):
    with pytest.raises(
        DeepSpeedConfigError, match="gradient_accumulation_steps=8 contradicts stage.optim.grad_accum=2"
    ):
        resolve_config(
            {"gradient_accumulation_steps": 8},
            micro_batch_size=1,
            grad_accum=2,
            max_grad_norm=1.0,
            precision="fp32",
        )
    with pytest.raises(DeepSpeedConfigError, match="stage.deepspeed.optimizer"):
        resolve_config(
            {"optimizer": {"type": "AdamW"}},
            micro_batch_size=1,
            grad_accum=1,
            max_grad_norm=1.0,
            precision="fp32",
        )
    with pytest.raises(DeepSpeedConfigError, match="fp16"):
        resolve_config(
            {"fp16": {"enabled": True}}, micro_batch_size=1, grad_accum=1, max_grad_norm=1.0, precision="fp32"
        )
    with pytest.raises(DeepSpeedConfigError, match="bf16.enabled"):
        resolve_config(
            {"bf16": {"enabled": True}}, micro_batch_size=1, grad_accum=1, max_grad_norm=1.0, precision="fp32"
        )
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 2}}))
    assert (
        resolve_config(path, micro_batch_size=4, grad_accum=1, max_grad_norm=1.0, precision="fp32")[
            "train_batch_size"
        ]
        == 4
    )
    with pytest.raises(FileNotFoundError):
        resolve_config(
            tmp_path / "missing.json", micro_batch_size=4, grad_accum=1, max_grad_norm=1.0, precision="fp32"
        )


def test_launcher_presets_are_global_packages():
    local = yaml.safe_load((REPO / "conf" / "launcher" / "local.yaml").read_text())
    assert local == {"stage": {"deepspeed": None}}
    for name in ("local.yaml", "deepspeed_zero2.yaml"):
        assert (REPO / "conf" / "launcher" / name).read_text().startswith("# @package _global_")
    assert make_stepper_factory(None, micro_batch_size=1, precision="fp32") is torch_stepper


def test_ensure_distributed_env(monkeypatch, tmp_path):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCH_EXTENSIONS_DIR"):
        monkeypatch.setenv(var, "")  # recorded, so teardown removes what ensure_distributed_env sets
        monkeypatch.delenv(var)
    monkeypatch.setenv("ARC_LAB_CACHE", str(tmp_path))
    assert ensure_distributed_env() is True
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]) == (
        "0",
        "1",
        "127.0.0.1",
    )
    assert int(os.environ["MASTER_PORT"]) > 0
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "torch_extensions")
    assert ensure_distributed_env() is False  # now looks launched
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(RuntimeError, match="half set"):
        ensure_distributed_env()


# ----------------------------------------------------------------------------------- real runs
def _run_worker(cmd: list[str], out_dir: Path, world: int, timeout: int = 420) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    results = [out_dir / f"rank{r}.json" for r in range(world)]
    if proc.returncode != 0 or not all(p.is_file() for p in results):
        raise AssertionError(
            f"worker failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return [json.loads(p.read_text()) for p in results]


def _check(res: dict) -> None:
    assert res["losses"][-1] < res["losses"][0], res["losses"]
    assert res["param_change"] > 1e-4  # the adapter moved
    assert res["frozen_change"] == 0.0  # the base did not
    assert res["rms_vs_torch"] < ADAM_RMS_TOL, res  # ZeRO-2 == plain AdamW + clipping + schedule
    assert res["lrs"] == pytest.approx(res["torch_lrs"], rel=1e-9)
    assert max(res["grad_norms"]) > 0.1  # above max_grad_norm: clipping was active
    # the first step's norm is the same gradient up to rounding (relative error <= gamma ~ 2e-4); later
    # norms also see the (bounded) weight differences
    assert res["grad_norms"][0] == pytest.approx(res["torch_grad_norms"][0], rel=1e-3)
    assert res["grad_norms"] == pytest.approx(res["torch_grad_norms"], rel=ADAM_RMS_TOL)
    assert res["ckpt_files"] and all(f.startswith("deepspeed/") for f in res["ckpt_files"])
    assert res["resume_max_diff"] == 0.0  # save -> fresh engine -> load -> one more step: identical
    assert res["resume_lr_equal"]


@pytest.mark.slow
def test_zero2_single_process(tmp_path):
    (res,) = _run_worker([sys.executable, str(Path(__file__)), str(tmp_path)], tmp_path, world=1)
    assert res["world_size"] == 1
    _check(res)


@pytest.mark.slow
def test_zero2_two_processes_torchrun(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(Path(__file__)), str(tmp_path)]
    results = _run_worker(cmd, tmp_path, world=2)
    for res in results:
        assert res["world_size"] == 2
        _check(res)
    # both ranks hold the same (replicated) weights after the ZeRO-2 all-gather
    assert results[0]["param_checksum"] == pytest.approx(results[1]["param_checksum"], rel=1e-7)
    assert {f for r in results for f in r["ckpt_files"]} >= {
        "deepspeed/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "deepspeed/zero_pp_rank_1_mp_rank_00_optim_states.pt",
    }


@pytest.mark.slow
def test_zero2_in_the_shared_loop(tmp_path):
    (res,) = _run_worker([sys.executable, str(Path(__file__)), str(tmp_path), "loop"], tmp_path, world=1)
    assert res["ckpt_has_deepspeed"]
    assert len(res["ds_losses"]) == 3
    check_losses(res["ds_losses"], res["torch_losses"])
    assert res["rms_vs_torch"] < ADAM_RMS_TOL, res
    assert res["resumed_from"] == 2 and res["resume_max_diff"] == 0.0  # exact resume through the engine


@pytest.mark.slow
def test_zero2_data_parallel_loop_equals_one_process(tmp_path):
    """2 ranks x 1 example == 1 process x 2 examples; checkpoints are one folder written by both ranks."""
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(Path(__file__)), str(tmp_path), "loop2"]
    r0, r1 = _run_worker(cmd, tmp_path, world=2)
    _run_worker([sys.executable, str(Path(__file__)), str(tmp_path), "plain2"], tmp_path, world=1)
    plain = json.loads((tmp_path / "plain.json").read_text())
    check_losses(r0["ds_losses"], plain["torch_losses"])
    assert plain["rms_vs_torch"] < ADAM_RMS_TOL, plain
    # the control: a plain run that sees only half of each global batch (what a sharding bug gives) is
    # far outside the bound, so the bound can tell a bug from rounding
    assert plain["rms_half_batch"] > 2 * ADAM_RMS_TOL, plain
    assert r0["ckpts"] == ["step-000002", "step-000003"]  # no per-rank temp folders left behind
    for r in (r0, r1):
        assert r["resumed_from"] == 2 and r["resume_max_diff"] == 0.0


@pytest.mark.slow
def test_zero2_a_signal_to_one_rank_stops_both_at_one_checkpoint(tmp_path):
    """Preemption under 2-rank ZeRO-2: SIGTERM reaches rank 1 only; the flag is all-reduced at the step
    boundary, both ranks write the same one checkpoint and stop; the rerun resumes from it on both ranks and
    ends exactly where an uninterrupted run ends."""
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(Path(__file__)), str(tmp_path), "signal2"]
    r0, r1 = _run_worker(cmd, tmp_path, world=2)
    for r in (r0, r1):
        assert r["stopped_at"] == "2" and r["ckpts_after_signal"] == ["step-000002"]
        assert r["resumed_from"] == 2 and r["resume_max_diff"] == 0.0


# -------------------------------------------------------------------------------------- worker
def _tiny_lora_model():
    import torch

    from arc_lab.train.lora import add_lora

    model, _ = load_tiny(
        "tiny_llama",
        hidden_size=32,
        num_heads=2,
        num_kv_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])


def _micro_batches(rank: int, world: int):
    """For each optimizer step and micro-batch: the global rows and this rank's share (the same
    global batch every step, so the loss must go down)."""
    import torch

    g = torch.Generator().manual_seed(1)
    rows = GLOBAL_MICRO * world
    data = torch.randint(0, 2000, (1, GRAD_ACCUM, rows, 12), generator=g).expand(STEPS + 1, -1, -1, -1)
    return data, data[:, :, rank::world]


def _loss(model, ids):
    return model(input_ids=ids, labels=ids, use_cache=False).loss


def _trainable(model):
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}


def _train_steps(stepper, batches, n_steps, offset=0):
    losses, norms, lrs = [], [], []
    for s in range(offset, offset + n_steps):
        lrs.append(stepper.lr())
        for m in range(GRAD_ACCUM):
            loss = _loss(stepper.module, batches[s, m].to(getattr(stepper, "device", "cpu")))
            stepper.backward(loss)
        losses.append(float(loss.detach()))
        norms.append(stepper.step())
    return losses, norms, lrs


def worker(out_dir: Path) -> None:
    import copy

    import torch

    from arc_lab import dist
    from arc_lab.train.deepspeed_engine import deepspeed_stepper_factory

    torch.manual_seed(0)
    ensure_distributed_env()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    model = _tiny_lora_model()
    reference_model = copy.deepcopy(model)
    frozen0 = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    kwargs = {
        "lr": 5e-2,
        "weight_decay": 0.01,
        "max_grad_norm": 0.1,
        "grad_accum": GRAD_ACCUM,
        "schedule": "linear",
        "warmup_ratio": 0.25,
        "total_steps": STEPS + 1,
    }
    factory = deepspeed_stepper_factory(_preset(), micro_batch_size=GLOBAL_MICRO, precision="fp32")
    stepper = factory(model, **kwargs)
    assert (dist.rank(), dist.world_size()) == (rank, world)
    full, mine = _micro_batches(rank, world)
    p0 = _trainable(stepper.module)
    losses, norms, lrs = _train_steps(stepper, mine, STEPS)
    p1 = _trainable(stepper.module)

    # the same global batches through the plain-torch stepper (rows of all ranks in one micro-batch)
    ref = torch_stepper(reference_model, **kwargs)
    _, ref_norms, ref_lrs = _train_steps(ref, full, STEPS)
    p_ref = _trainable(ref.module)

    # checkpoint round trip: save, a fresh engine on a fresh model, load, one more step on both
    ckpt = out_dir / "ckpt"
    stepper.save(ckpt)
    restored = factory(_tiny_lora_model(), **kwargs)
    restored.load(ckpt)
    lr_equal = restored.lr() == stepper.lr()
    _train_steps(stepper, mine, 1, offset=STEPS)
    _train_steps(restored, mine, 1, offset=STEPS)
    a, b = _trainable(stepper.module), _trainable(restored.module)

    frozen1 = dict(stepper.module.named_parameters())
    result = {
        "world_size": world,
        "losses": losses,
        "grad_norms": norms,
        "torch_grad_norms": ref_norms,
        "lrs": lrs,
        "torch_lrs": ref_lrs,
        "param_change": max(float((p1[n] - p0[n]).abs().max()) for n in p0),
        "frozen_change": max(float((frozen1[n].detach() - v).abs().max()) for n, v in frozen0.items()),
        "max_diff_vs_torch": max(float((p1[n] - p_ref[n]).abs().max()) for n in p1),
        "rms_vs_torch": adam_rms(p1, p_ref, lrs),
        "param_checksum": float(sum(v.double().sum() for v in p1.values())),
        "ckpt_files": sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*.pt")),
        "resume_max_diff": max(float((a[n] - b[n]).abs().max()) for n in a),
        "resume_lr_equal": lr_equal,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    if world > 1:
        torch.distributed.barrier()


def _loop_run(out_dir: Path, factory, cache: Path, batch_size: int = 2, save_every: int = 1, logger=None):
    from arc_lab.config import LoraConfig, OptimConfig
    from arc_lab.data.builders import build_pairs
    from arc_lab.data.builtin import builtin_items
    from arc_lab.objectives.dpo import DPOLoss
    from arc_lab.train.args import Runtime, StageArgs
    from arc_lab.train.loop import train

    model, tok = load_tiny(
        "tiny_llama",
        hidden_size=32,
        num_heads=2,
        num_kv_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    # one pair per question: one process batches whole questions (epoch_batches) while data-parallel runs
    # slice randperm(n); with one example per question both give the same global batches
    pairs = build_pairs(builtin_items("train")[:12])[::3]
    optim = OptimConfig(
        lr=LOOP_LR,
        max_steps=LOOP_STEPS,
        batch_size=batch_size,
        grad_accum=2,
        warmup_ratio=0.0,
        log_every=1,
        save_every=save_every,
        scheduler="constant",
        precision="fp32",
    )
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    return train(
        model,
        tok,
        DPOLoss(beta=0.1),
        pairs,
        StageArgs(optim=optim, lora=lora, seq_len=128, precompute_reference=True),
        out_dir=out_dir,
        runtime=Runtime(logger=logger, stepper_factory=factory, cache_dir=cache, progress=False),
    )


def loop_worker(out_dir: Path) -> None:
    """The shared loop (arc_lab.train.loop.train) with the DeepSpeed stepper vs the plain-torch one,
    and a resume after a simulated kill (the newest checkpoint deleted)."""
    import shutil

    from arc_lab.train.deepspeed_engine import deepspeed_stepper_factory

    ds = deepspeed_stepper_factory(_preset(), micro_batch_size=2, precision="fp32")
    full = _loop_run(out_dir / "ds", ds, out_dir / "cache")
    plain = _loop_run(out_dir / "torch", torch_stepper, out_dir / "cache")
    shutil.rmtree(out_dir / "ds" / "checkpoints" / "step-000003")
    resumed = _loop_run(out_dir / "ds", ds, out_dir / "cache")
    a, b, c = (_trainable(r.model) for r in (full, plain, resumed))
    result = {
        "ds_losses": [h["loss"] for h in full.history if "loss" in h],
        "torch_losses": [h["loss"] for h in plain.history if "loss" in h],
        "max_diff_vs_torch": max(float((a[n] - b[n]).abs().max()) for n in a),
        "rms_vs_torch": adam_rms(a, b, [LOOP_LR] * LOOP_STEPS),
        "resumed_from": resumed.resumed_from,
        "resume_max_diff": max(float((a[n] - c[n]).abs().max()) for n in a),
        "ckpt_has_deepspeed": (full.checkpoint / "deepspeed").is_dir(),
    }
    (out_dir / "rank0.json").write_text(json.dumps(result, indent=1))


def loop2_worker(out_dir: Path) -> None:
    """The shared loop data-parallel over 2 ranks (ZeRO-2, 1 example per rank per micro-batch) vs one
    plain-torch process with 2 examples per micro-batch: the same global batches, so the same weights;
    then a resume of the 2-rank run after rank 1's shard of its newest checkpoint is truncated: the
    manifest rank 0 wrote after both ranks saved catches it, and both ranks fall back to step 2."""
    import torch

    from arc_lab.train.deepspeed_engine import deepspeed_stepper_factory

    rank = int(os.environ["RANK"])
    ds = deepspeed_stepper_factory(_preset(), micro_batch_size=1, precision="fp32")
    full = _loop_run(out_dir / "ds", ds, out_dir / f"cache{rank}", batch_size=1)
    ckpts = out_dir / "ds" / "checkpoints"
    torch.distributed.barrier()
    if rank == 0:
        (shard,) = (p for p in (ckpts / "step-000003").rglob("*") if "rank_1" in p.name)
        assert (
            shard.relative_to(ckpts / "step-000003").as_posix()
            in json.loads((ckpts / "step-000003" / "MANIFEST.json").read_text())["files"]
        )
        shard.write_bytes(shard.read_bytes()[:100])
    torch.distributed.barrier()
    resumed = _loop_run(out_dir / "ds", ds, out_dir / f"cache{rank}", batch_size=1)
    assert (ckpts / "damaged-step-000003").is_dir()  # moved aside, out of the rotation
    a, c = _trainable(full.model), _trainable(resumed.model)
    result = {
        "resumed_from": resumed.resumed_from,
        "resume_max_diff": max(float((a[n] - c[n]).abs().max()) for n in a),
        "ds_losses": [h["loss"] for h in full.history if "loss" in h],
    }
    if rank == 0:
        torch.save(a, out_dir / "ds_trainable.pt")
        result["ckpts"] = sorted(p.name for p in ckpts.iterdir() if not p.name.startswith("damaged-"))
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    torch.distributed.barrier()


def signal2_worker(out_dir: Path) -> None:
    """2 ranks, ZeRO-2, no periodic checkpoint; only rank 1 gets SIGTERM (while step 1 is logged). Both
    ranks must stop at the same step boundary with one checkpoint (written by both), and a rerun must end
    exactly where an uninterrupted 2-rank run ends."""
    import signal

    import torch

    from arc_lab.train.deepspeed_engine import deepspeed_stepper_factory
    from arc_lab.train.preempt import Preempted

    rank = int(os.environ["RANK"])

    class SignalRank1:
        def log(self, metrics, step):
            if rank == 1 and step == 1 and "loss" in metrics:
                os.kill(os.getpid(), signal.SIGTERM)

    ds = deepspeed_stepper_factory(_preset(), micro_batch_size=1, precision="fp32")
    full = _loop_run(out_dir / "full", ds, out_dir / f"cache{rank}", batch_size=1, save_every=0)
    stopped_at = None
    try:
        _loop_run(
            out_dir / "cut", ds, out_dir / f"cache{rank}", batch_size=1, save_every=0, logger=SignalRank1()
        )
    except Preempted as e:
        stopped_at = str(e).split(" at step ")[1].split(" ")[0]
    torch.distributed.barrier()
    ckpts = sorted(p.name for p in (out_dir / "cut" / "checkpoints").iterdir())
    resumed = _loop_run(out_dir / "cut", ds, out_dir / f"cache{rank}", batch_size=1, save_every=0)
    a, c = _trainable(full.model), _trainable(resumed.model)
    result = {
        "stopped_at": stopped_at,
        "ckpts_after_signal": ckpts,
        "resumed_from": resumed.resumed_from,
        "resume_max_diff": max(float((a[n] - c[n]).abs().max()) for n in a),
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    torch.distributed.barrier()


def plain2_worker(out_dir: Path) -> None:
    """One plain-torch process over the same global batches as :func:`loop2_worker` (2 per micro-batch)."""
    import torch

    plain = _loop_run(out_dir / "torch", torch_stepper, out_dir / "cache_plain", batch_size=2)
    half = _loop_run(out_dir / "half", torch_stepper, out_dir / "cache_half", batch_size=1)
    a, b = torch.load(out_dir / "ds_trainable.pt"), _trainable(plain.model)
    result = {
        "max_diff_vs_torch": max(float((a[n] - b[n]).abs().max()) for n in a),
        "rms_vs_torch": adam_rms(a, b, [LOOP_LR] * LOOP_STEPS),
        "rms_half_batch": adam_rms(_trainable(half.model), b, [LOOP_LR] * LOOP_STEPS),
        "torch_losses": [h["loss"] for h in plain.history if "loss" in h],
    }
    (out_dir / "plain.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    if sys.argv[2:] == ["loop"]:
        loop_worker(Path(sys.argv[1]))
    elif sys.argv[2:] == ["loop2"]:
        loop2_worker(Path(sys.argv[1]))
    elif sys.argv[2:] == ["signal2"]:
        signal2_worker(Path(sys.argv[1]))
    elif sys.argv[2:] == ["plain2"]:
        plain2_worker(Path(sys.argv[1]))
    else:
        worker(Path(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # avoids the occasional gloo abort at interpreter exit (platform notes)
