"""Atomic checkpoints and exact resume.

Layout: ``<out_dir>/checkpoints/step-000004/`` holds what the stepper owns (``trainable.pt`` -- the
adapter only for LoRA, every weight for a full fine-tune --, ``optimizer.pt``, ``scheduler.pt`` for the
plain-torch stepper) and the loop's ``state.pt``: step count, data position (epoch, micro-batch index;
the sampler order is a pure function of seed and epoch), RNG states (python, numpy, torch CPU and CUDA),
the metrics history, and the run signature.

A checkpoint is built in a ``.tmp-*`` sibling and renamed into place, so a directory named
``step-*`` is complete when written; a killed run leaves at most a temporary directory, removed on the next
start. Its last file is ``MANIFEST.json`` (:mod:`arc_lab.run.manifest`: size and sha256 of every file, every
rank's shards included -- rank 0 writes it after all ranks saved). Resuming takes the newest checkpoint
that still matches its manifest (:func:`resume_checkpoint`); a damaged newer one (a truncated
``trainable.pt``, a deleted shard) is named in a WARNING and moved aside to ``damaged-step-*`` (kept for
inspection, out of the rotation), and with none intact training starts over. Hashing costs one read of
the checkpoint per save and per resume (sha256: roughly 1 s per GB). Only the newest ``keep`` checkpoints are kept. Resuming into an ``out_dir`` written by a run with
a different signature (data, batch size, steps, seed, objective...) is an error, not a silent mix.

Public API: :class:`LoopState`, :func:`latest_checkpoint`, :func:`resume_checkpoint`,
:func:`save_checkpoint`, :func:`load_checkpoint`, :func:`capture_rng`, :func:`restore_rng`.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arc_lab import dist
from arc_lab.run.manifest import check_manifest, write_manifest
from arc_lab.run.runinfo import save_torch
from arc_lab.train.stepper import Stepper

log = logging.getLogger(__name__)
PREFIX = "step-"


@dataclass
class LoopState:
    """Everything the loop needs, besides the stepper's state, to continue exactly.

    Attributes:
        step: optimizer steps done.
        epoch: epoch of the next micro-batch.
        batch_in_epoch: index of the next micro-batch within that epoch's order.
        tokens_seen: real (non-pad) tokens consumed so far.
        history: metrics dicts logged so far (one per logging step).
        signature: the run's identity (see :func:`arc_lab.train.loop.train`); must match on resume.
        rng: RNG states from :func:`capture_rng` (filled at save time).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    signature: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    """States of python's, numpy's and torch's (CPU, every CUDA device) global generators."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def _step_of(path: Path) -> int:
    return int(path.name[len(PREFIX) :])


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of ``out_dir``, oldest first."""
    root = _root(out_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()
    ]
    return sorted(found, key=_step_of)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``out_dir``, or None. Removes leftovers of killed saves."""
    root = _root(out_dir)
    if root.is_dir() and dist.rank() == 0:
        for tmp in root.glob(".tmp-*"):
            log.info("removing the unfinished checkpoint %s (a run was killed while saving)", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1] if ckpts else None


def resume_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``out_dir`` whose files match its manifest, or None.

    Each damaged newer checkpoint is named in a WARNING with what is wrong and moved aside to
    ``damaged-step-*`` (so that it neither counts among the ``keep`` newest nor is tried again). In a
    distributed run rank 0 checks and every rank gets its answer.
    """
    rank, distributed = dist.rank(), dist.initialized()
    holder: list[str | None] = [None]
    if rank == 0:
        latest_checkpoint(out_dir)  # removes leftovers of killed saves
        damaged = []
        for ckpt in reversed(list_checkpoints(out_dir)):
            problems = check_manifest(ckpt)
            if not problems:
                holder[0] = str(ckpt)
                break
            aside = _free_name(ckpt.with_name(f"damaged-{ckpt.name}"))
            os.replace(ckpt, aside)
            damaged.append(ckpt)
            log.warning(
                "checkpoint %s is damaged (%s): not resuming from it; moved to %s",
                ckpt,
                "; ".join(problems),
                aside,
            )
        if damaged:
            log.warning(
                "resuming from %s instead of the newer damaged checkpoint(s) %s",
                holder[0] or "scratch (no intact checkpoint)",
                [p.name for p in damaged],
            )
    if distributed:
        torch.distributed.broadcast_object_list(holder, src=0)
    return Path(holder[0]) if holder[0] else None


def _free_name(path: Path) -> Path:
    n, out = 1, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}-{n}")
    return out


def save_checkpoint(out_dir: str | Path, stepper: Stepper, state: LoopState, *, keep: int = 2) -> Path:
    """Write ``step-<state.step>`` atomically (stepper files + ``state.pt``), keep the newest ``keep``.

    The RNG states are captured here, so call it right after an optimizer step, before anything else
    draws random numbers.
    """
    if keep < 1:
        raise ValueError(f"keep={keep}: at least one checkpoint must be kept for resume")
    root = _root(out_dir)
    final = root / f"{PREFIX}{state.step:06d}"
    rank, distributed = dist.rank(), dist.initialized()
    # In a DeepSpeed/torchrun run every rank writes its shard into the one temp dir rank 0 made;
    # rank 0 alone writes the loop state and renames, between barriers.
    holder: list[str | None] = [None]
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        holder[0] = tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root)
    if distributed:
        torch.distributed.broadcast_object_list(holder, src=0)
    assert holder[0] is not None  # rank 0 made it; the broadcast gave it to every rank
    tmp = Path(holder[0])
    try:
        stepper.save(tmp)
        dist.barrier()
        if rank == 0:
            state.rng = capture_rng()
            save_torch(asdict(state), tmp / "state.pt")  # an out-of-space error keeps errno + file
            write_manifest(tmp)  # last, after every rank's files (the barrier above)
            if final.exists():  # the same step written again (a rerun): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in list_checkpoints(out_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier()
    return final


def load_checkpoint(path: str | Path, stepper: Stepper, *, signature: dict[str, Any]) -> LoopState:
    """Restore ``stepper`` and the global RNGs from ``path``; return the loop state.

    Raises:
        ValueError: the checkpoint was written by a run with a different ``signature``.
    """
    path = Path(path)
    raw = torch.load(
        path / "state.pt", map_location="cpu", weights_only=False
    )  # our own file: numpy RNG state
    state = LoopState(**raw)
    diff = {k: (state.signature.get(k), v) for k, v in signature.items() if state.signature.get(k) != v}
    if diff:
        lines = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{path} was written by a different run ({lines}). Use a fresh out_dir, or delete "
            f"{path.parent} to start over."
        )
    stepper.load(path)
    restore_rng(state.rng)
    return state
