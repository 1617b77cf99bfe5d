"""Run-folder provenance: what was run, on which code, with which data, and content hashes of configs.

Every run folder gets ``config.yaml`` (the resolved config), ``provenance.json`` (code revision, dirty
flag, command line, library versions, host, time) and, once data is built, ``data.json`` (dataset
fingerprints). Config hashes key the stage cache and the W&B run ids.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    blob = json.dumps(node, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_provenance(run_dir: Path, cfg: DictConfig | dict, **extra: Any) -> None:
    """Write ``config.yaml`` and ``provenance.json`` into ``run_dir``."""
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
