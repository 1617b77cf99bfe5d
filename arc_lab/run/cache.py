"""Is a stage- or eval-cache entry usable, and if not, why: the checks behind every logged hit and miss.

A stage entry (``<output_root>/stages/<hash>/``) is usable when it has ``DONE`` and its files match its
``MANIFEST.json`` (:data:`STAGE_ENTRY_PARTS`: what a hit reads); an eval entry (``evals/<hash>/``) when all
its files match its manifest. A key with no entry is explained by comparing its data fingerprints with the
newest entry of the same config (so an in-place edit of a data file is logged as such).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from arc_lab import dist
from arc_lab.run import manifest

log = logging.getLogger(__name__)

#: What a stage-cache entry's manifest covers: everything a cache hit reads.
STAGE_ENTRY_PARTS = ("model", "train.json", "data.json")


def stage_entry_problem(stage_dir: Path) -> str | None:
    """None when ``stage_dir`` is a finished stage whose files match its manifest, else why it is not."""
    if not (stage_dir / "DONE").is_file():
        return "not trained yet" if not stage_dir.is_dir() else "not finished (no DONE)"
    problems = manifest.check_manifest(stage_dir)
    return "; ".join(problems) if problems else None


def eval_entry_problem(eval_dir: Path) -> str | None:
    """None when ``eval_dir`` holds an evaluation whose files match its manifest, else why it does not."""
    if not eval_dir.is_dir():
        return "not evaluated yet"
    problems = manifest.check_manifest(eval_dir)
    return "; ".join(problems) if problems else None


def why_no_entry(entries: Path, meta: str, config_key: str, inputs: dict[str, str]) -> str:
    """Why a key has no entry: the data inputs that differ from the newest entry with the same config
    (``<entry>/<meta>`` holds its ``config_key`` and ``data_inputs``), or that no such entry exists."""
    metas = sorted(entries.glob(f"*/{meta}"), key=_mtime, reverse=True)
    for path in metas:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(old, dict) and old.get("config_key") == config_key:
            was = old.get("data_inputs") or {}
            changed = sorted(k for k in set(was) | set(inputs) if was.get(k) != inputs.get(k))
            return f"no entry; {path.parent.name} has the same config but other data content: {changed}"
    return "no entry for this config and data"


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed meanwhile
        return 0


@contextlib.contextmanager
def stage_lock(stage_dir: Path, label: str) -> Iterator[None]:
    """Hold an exclusive lock on ``stage_dir`` while training it, so that sweep jobs running in parallel
    (``hydra/launcher=submitit_local`` / ``slurm_gpu``) that need the same stage train it once: the others
    wait, then reuse it. The kernel releases the lock when a job dies. Not taken in multi-process
    (DeepSpeed/torchrun) runs, whose ranks train the stage together."""
    if dist.world_size() > 1:
        yield
        return
    import fcntl

    stage_dir.mkdir(parents=True, exist_ok=True)
    with open(stage_dir / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("stage %s is being trained by another job (%s): waiting for it", label, stage_dir)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def publish_eval_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; when a parallel job got there first, keep its (identical) result. A
    ``final`` that fails its manifest (damaged, or left by a killed run) is replaced."""
    try:
        os.replace(tmp, final)
    except OSError:  # final exists and is not empty
        if eval_entry_problem(final) is not None:
            shutil.rmtree(final)
            os.replace(tmp, final)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
