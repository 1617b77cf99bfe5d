"""Run-folder provenance: what was run, on which code, with which data, and content hashes of configs.

Every run folder gets ``config.yaml`` (the resolved config), ``provenance.json`` (code revision, dirty
flag, command line, library versions, host, time) and, once data is built, ``data.json`` (dataset
fingerprints). Config hashes key the stage cache and the W&B run ids.

Writes that run out of disk space (``ENOSPC``, or ``EDQUOT`` for a quota) become a :class:`DiskFull` error
naming the file and what was kept (:func:`disk_full_guard` adds that at each level that knows it), which
the command line prints as one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "peft", "datasets", "lm_eval", "deepspeed", "hydra-core", "wandb")


def git_revision(root: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}``; ``commit`` is ``"unknown"`` outside a git checkout (said, not hidden)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"commit": sha, "dirty": bool(status), "dirty_files": status.splitlines()[:50]}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None, "note": f"{root} is not a git checkout"}


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def config_hash(node: Any, n: int = 12) -> str:
    """Stable short sha256 of a (resolved) config node or plain container."""
    if "omegaconf" in sys.modules:  # a DictConfig can only exist once omegaconf is imported
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
    blob = json.dumps(node, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


#: errno values that mean "the filesystem has no room for this write".
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(RuntimeError):
    """A write ran out of disk space; the message names the file and everything that was kept.

    Attributes:
        path: the file (or folder) being written.
        kept: what is intact, one entry per level that knew (innermost first).
    """

    def __init__(self, path: str | Path, kept: list[str] | None = None) -> None:
        super().__init__(str(path))
        self.path, self.kept = str(path), list(kept or [])

    def __str__(self) -> str:
        kept = "; ".join(self.kept) or "nothing else was written"
        return f"no space left on device while writing {self.path}. Kept: {kept}. Free space and rerun."


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an out-of-space write error.

    Besides ``OSError`` with ``ENOSPC``/``EDQUOT``, libraries that wrap the OS error in their own type
    (safetensors' Rust writer) are recognised by the C library's message for those errno values.
    """
    texts = tuple(os.strerror(e) for e in NO_SPACE)
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DiskFull) or (isinstance(cur, OSError) and cur.errno in NO_SPACE):
            return True
        if any(t in str(cur) for t in texts):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@contextlib.contextmanager
def disk_full_guard(target: str | Path, kept: str | Callable[[], str]) -> Iterator[None]:
    """Turn an out-of-space error raised inside the block into :class:`DiskFull`, adding ``kept``.

    Args:
        target: what the block writes (used when the error does not name a file itself).
        kept: what stays intact if the block fails this way (a callable is evaluated at failure time).
    """
    try:
        yield
    except Exception as e:
        if not is_disk_full(e):
            raise
        note = kept() if callable(kept) else kept
        if isinstance(e, DiskFull):
            e.kept.append(note)
            raise
        path = getattr(e, "filename", None) or target
        raise DiskFull(path, [note]) from e


def write_probe(directory: str | Path) -> str | None:
    """Why nothing can be written into ``directory`` (created with its parents if missing), or None.

    Creates and removes a probe file, so it also catches what the mode bits do not show: a read-only
    filesystem, or a file standing where a folder should be (``os.access`` says yes to root everywhere).
    """
    import tempfile

    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a Python file object, so that a failed write surfaces as the ``OSError`` (with
    ``errno`` and the file name) instead of torch's own ``RuntimeError`` from its C++ writer."""
    import torch

    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and rename: readers never see half a file.

    Raises:
        DiskFull: out of space; the temp file is removed and the previous ``path`` (if any) is unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with disk_full_guard(path, f"the previous {path.name}, if any, is unchanged"):
            tmp.write_text(text)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +inf, -inf) replaced by ``None``, recursing into dicts,
    lists and tuples (tuples become lists, as ``json.dumps`` writes them anyway).

    The one convention for arc_lab's JSON files (``metrics.json``, ``samples/*.jsonl``, ``metrics.jsonl``):
    a non-finite number is written as ``null``. Strict JSON (RFC 8259) has no NaN/Infinity, and Python's
    ``json.dumps`` would write the bare tokens ``NaN``/``Infinity``, which other parsers (``jq``,
    JavaScript's ``JSON.parse``, ``json.loads(..., parse_constant=...)`` in strict readers) reject.
    ``null`` rather than the string ``"nan"``: a numeric field stays "a number or missing", so readers
    that expect numbers (``report.read_metrics``, pandas, W&B) see a missing value instead of a string
    in a number column. What is lost is which non-finite value it was; where that matters (a NaN or
    infinite training loss) the loop raises :class:`~arc_lab.train.health.TrainingDiverged` naming it.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_provenance(run_dir: Path, cfg: Any, **extra: Any) -> None:
    """Write ``config.yaml`` and ``provenance.json`` into ``run_dir`` (``cfg``: a DictConfig or a dict)."""
    from omegaconf import DictConfig, OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(container)))
    write_json(
        run_dir / "provenance.json",
        {
            "revision": git_revision(),
            "command": [sys.executable, *sys.argv],
            "cwd": os.getcwd(),
            "python": platform.python_version(),
            "host": platform.node(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "libraries": library_versions(),
            **extra,
        },
    )
