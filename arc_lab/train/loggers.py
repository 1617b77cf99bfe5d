"""Metric loggers: a local JSONL log that always works, Weights & Biases, and a fan-out.

Every logger has the same three methods::

    logger.log({"train/loss": 0.69, "train/lr": 5e-6}, step=10)   # one point per optimizer step
    logger.log_summary({"eval/acc_norm": 0.41})                  # final numbers of the run
    logger.finish()                                              # flush and close (idempotent)

:func:`make_logger` builds what a run needs from the ``logger`` config group: the run folder's
``metrics.jsonl`` (:class:`JsonlLogger`) always, plus a :class:`WandbLogger` unless ``logger.wandb=disabled``.

W&B conventions (so that a sweep can be pivoted in the W&B UI):

* the config is logged **flat**, with dot-joined keys (``stage.optim.lr``, ``objective.beta``);
* every cell of a sweep shares a ``group``; ``name`` is the human label of the cell;
* ``id`` is deterministic (see :func:`config_run_id`) and ``resume="allow"``, so a resumed cell continues
  its own run instead of starting a new one;
* offline mode keeps every file inside the run folder: ``WANDB_DIR``, ``WANDB_CONFIG_DIR``,
  ``WANDB_CACHE_DIR`` and ``WANDB_DATA_DIR`` point under ``<run_dir>/wandb_state`` while the run is open
  (and are restored by :meth:`WandbLogger.finish`). ``wandb sync <run_dir>/wandb/offline-run-*`` uploads
  it later; :mod:`arc_lab.analysis.wandb_offline` reads it back without uploading.

In multi-process (DeepSpeed / torchrun) runs only rank 0 logs: ``make_logger(..., rank=r)`` returns a
:class:`NullLogger` on the other ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from arc_lab.run.runinfo import json_safe

#: keys that :class:`JsonlLogger` writes itself; a metric may not use them
RESERVED_KEYS = ("step", "time", "summary")
WANDB_MODES = ("online", "offline", "disabled")
WANDB_DIR_VARS = ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")


# ------------------------------------------------------------------------------------------ helpers
def flatten_config(config: Mapping[str, Any] | Any, sep: str = ".") -> dict[str, Any]:
    """Flatten a nested config into dot-joined keys: ``{"stage": {"optim": {"lr": 1}}}`` -> ``{"stage.optim.lr": 1}``.

    Accepts plain mappings, OmegaConf ``DictConfig`` (resolved) and dataclass instances. Lists stay lists
    (W&B shows them as values); empty mappings are kept as ``{}`` so that no key silently disappears.

    Raises:
        TypeError: ``config`` is not a mapping, DictConfig or dataclass instance.
    """
    config = _to_container(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, DictConfig or dataclass, got {type(config).__name__}")
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            full = f"{prefix}{sep}{key}" if prefix else str(key)
            value = _to_container(value)
            if isinstance(value, Mapping) and value:
                walk(value, full)
            else:
                flat[full] = dict(value) if isinstance(value, Mapping) else value

    walk(config, "")
    return flat


def _to_container(value: Any) -> Any:
    """DictConfig/ListConfig -> plain containers; dataclass instance -> dict; anything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def config_run_id(config: Mapping[str, Any] | Any, prefix: str = "", length: int = 16) -> str:
    """A deterministic W&B run id: ``prefix`` + the first ``length`` hex digits of sha256(flat config).

    The same config always gives the same id, so a resumed sweep cell (``resume="allow"``) continues
    its run. W&B ids may contain letters, digits, ``-`` and ``_`` only.

    Raises:
        ValueError: ``prefix`` contains a character W&B does not allow in run ids.
    """
    if prefix and not all(c.isalnum() or c in "-_" for c in prefix):
        raise ValueError(f"run id prefix {prefix!r}: only letters, digits, '-' and '_' are allowed")
    blob = json.dumps(flatten_config(config), sort_keys=True, default=str)
    return prefix + hashlib.sha256(blob.encode()).hexdigest()[:length]


def _scalar(key: str, value: Any) -> float | int | bool:
    """A metric value as a plain Python number (accepts 0-dim tensors and numpy scalars)."""
    if hasattr(value, "item"):
        size = value.numel() if hasattr(value, "numel") else getattr(value, "size", 1)
        if size != 1:
            raise TypeError(f"metric {key!r}: expected a scalar, got an array of {size} elements")
        value = value.item()
    if isinstance(value, (bool, int, float)):
        return value
    raise TypeError(f"metric {key!r}: expected a number or a 0-dim tensor, got {type(value).__name__}")


def _drop_step(metrics: Mapping[str, Any], step: int) -> dict[str, Any]:
    """The loop's records carry their own ``step``: drop it when it agrees with ``step``, refuse otherwise."""
    metrics = dict(metrics)
    if "step" in metrics:
        own = metrics.pop("step")
        if int(own) != int(step):
            raise ValueError(f"metrics carry step={own} but were logged at step={step}")
    return metrics


# ------------------------------------------------------------------------------------------ loggers
class Logger:
    """Base class: ``log``, ``log_summary``, ``finish``; usable as a context manager (finishes on exit)."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:  # pragma: no cover - interface
        """Record ``metrics`` (name -> number) at optimizer step ``step``; a ``"step"`` entry in
        ``metrics`` (the loop's records have one) must equal ``step`` and is not logged twice."""
        raise NotImplementedError

    def log_summary(self, metrics: Mapping[str, Any]) -> None:  # pragma: no cover - interface
        """Record the run's final numbers (may be called several times; later keys win)."""
        raise NotImplementedError

    def finish(self) -> None:  # pragma: no cover - interface
        """Flush and close; calling it twice is harmless."""
        raise NotImplementedError

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


class NullLogger(Logger):
    """Logs nothing (non-zero ranks of a multi-process run)."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class JsonlLogger(Logger):
    """Append-only ``<run_dir>/metrics.jsonl``: one JSON object per call, flushed immediately.

    A ``log`` line is ``{"step": 10, "time": <unix seconds>, "train/loss": 0.69, ...}``; a
    ``log_summary`` line is ``{"summary": true, "time": ..., "eval/acc": 0.4, ...}``. Non-finite numbers
    are written as ``null`` (:func:`arc_lab.run.runinfo.json_safe`), so every line is strict JSON. The file is opened
    in append mode, so a resumed run continues it; when steps repeat after a resume, the last line of a
    step is the one that counts (see :func:`read_metrics`).

    Args:
        run_dir: the run folder (created if missing).
        filename: name of the log inside ``run_dir``.
    """

    def __init__(self, run_dir: str | Path, filename: str = "metrics.jsonl"):
        self.path = Path(run_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finish()

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path}: logger already finished")
        self._fh.write(json.dumps(record, allow_nan=False) + "\n")
        self._fh.flush()

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        metrics = _drop_step(metrics, step)
        clash = [k for k in metrics if k in RESERVED_KEYS]
        if clash:
            raise ValueError(f"metric names {clash} are reserved by metrics.jsonl ({RESERVED_KEYS})")
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        record.update({k: json_safe(_scalar(k, v)) for k, v in metrics.items()})
        self._write(record)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        clash = [k for k in metrics if k in RESERVED_KEYS]
        if clash:
            raise ValueError(f"summary keys {clash} are reserved by metrics.jsonl ({RESERVED_KEYS})")
        record: dict[str, Any] = {"summary": True, "time": time.time()}
        for k, v in metrics.items():
            v = v.item() if hasattr(v, "item") else v
            record[k] = json_safe(v)
        self._write(record)

    def finish(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read a ``metrics.jsonl`` back: (rows sorted by step, the last line per step wins; merged summary)."""
    by_step: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({e})") from e
            if rec.pop("summary", False):
                rec.pop("time", None)
                summary.update(rec)
            else:
                by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)], summary


class WandbLogger(Logger):
    """A Weights & Biases run (online, offline or disabled).

    Args:
        mode: ``online`` (needs ``wandb login``) | ``offline`` (files only, inside ``run_dir``) |
            ``disabled`` (a no-op run; nothing is written).
        project: W&B project.
        entity: W&B entity (user or team); None = the account default.
        group: W&B group; every cell of one sweep shares it.
        name: display name of this run.
        run_id: W&B run id (see :func:`config_run_id`); resumed with ``resume="allow"``.
        config: the run's config, nested or flat; logged flat with dot-joined keys.
        run_dir: the run folder; W&B writes ``<run_dir>/wandb/...``.
    """

    def __init__(
        self,
        *,
        mode: str,
        project: str,
        entity: str | None,
        group: str | None,
        name: str | None,
        run_id: str | None,
        config: Mapping[str, Any] | None,
        run_dir: str | Path,
    ):
        if mode not in WANDB_MODES:
            raise ValueError(f"logger.wandb={mode!r}: expected one of {list(WANDB_MODES)}")
        import wandb

        self.mode = mode
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._saved_env: dict[str, str | None] = {}
        if mode == "offline":
            self._redirect_wandb_dirs()
        try:
            self.run = wandb.init(
                mode=mode,
                project=project,
                entity=entity,
                group=group,
                name=name,
                id=run_id,
                resume="allow",
                config=flatten_config(config or {}),
                dir=str(self.run_dir),
                reinit="create_new",
            )
        except Exception:
            self._restore_env()
            raise
        self._finished = False

    def _redirect_wandb_dirs(self) -> None:
        """Point every W&B directory under the run folder (remembering the old values)."""
        state = self.run_dir / "wandb_state"
        targets = {
            "WANDB_DIR": self.run_dir,
            "WANDB_CONFIG_DIR": state / "config",
            "WANDB_CACHE_DIR": state / "cache",
            "WANDB_DATA_DIR": state / "data",
        }
        for var, path in targets.items():
            Path(path).mkdir(parents=True, exist_ok=True)
            self._saved_env[var] = os.environ.get(var)
            os.environ[var] = str(path)

    def _restore_env(self) -> None:
        for var, old in self._saved_env.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old
        self._saved_env = {}

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        metrics = _drop_step(metrics, step)
        self.run.log({k: _scalar(k, v) for k, v in metrics.items()}, step=int(step))

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        self.run.summary.update({k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()})

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            self.run.finish()
        finally:
            self._restore_env()


class MultiLogger(Logger):
    """Sends every call to each of ``loggers``; ``finish`` closes all of them even if one fails."""

    def __init__(self, loggers: Iterable[Logger]):
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_summary(metrics)

    def finish(self) -> None:
        errors: list[BaseException] = []
        for lg in self.loggers:
            try:
                lg.finish()
            except Exception as e:  # finish the others, then re-raise the first failure
                errors.append(e)
        if errors:
            raise errors[0]


def make_logger(
    mode: str,
    project: str,
    entity: str | None,
    group: str | None,
    name: str | None,
    run_id: str | None,
    config: Mapping[str, Any] | None,
    run_dir: str | Path,
    rank: int = 0,
) -> Logger:
    """The logger of one run: ``metrics.jsonl`` always, plus W&B unless ``mode == "disabled"``.

    Args:
        mode: ``logger.wandb``: online | offline | disabled.
        project, entity, group, name, run_id, config, run_dir: see :class:`WandbLogger`.
        rank: process rank; ranks other than 0 get a :class:`NullLogger`.

    Returns:
        A :class:`MultiLogger` (JSONL + W&B), a :class:`JsonlLogger` (W&B disabled) or a
        :class:`NullLogger` (rank != 0).
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb={mode!r}: expected one of {list(WANDB_MODES)}")
    if rank != 0:
        return NullLogger()
    local = JsonlLogger(run_dir)
    if mode == "disabled":
        return local
    try:
        remote = WandbLogger(
            mode=mode,
            project=project,
            entity=entity,
            group=group,
            name=name,
            run_id=run_id,
            config=config,
            run_dir=run_dir,
        )
    except Exception:
        local.finish()
        raise
    return MultiLogger([local, remote])
