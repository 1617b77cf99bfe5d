"""Evaluated run folders: discovery, labels, metrics and per-item samples (what every report reads).

A run folder holds ``metrics.json`` and, from arc_lab's pipeline, ``samples/<task>.jsonl`` (or ``.jsonl.gz`` in
a committed study), its resolved ``config.yaml``, ``chain.json`` and Hydra's ``.hydra/overrides.yaml``.
:func:`discover_runs` finds every such folder under a root and labels it; :func:`load_samples` reads a
task's samples and checks them against ``metrics.json``. :mod:`arc_lab.analysis.report`, :mod:`arc_lab.analysis.seed_report`,
:mod:`arc_lab.analysis.report_plot` and :mod:`arc_lab.analysis.quickstart` import from here (none of them from each other's
internals).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arc_lab.data.loaders import DataError
from arc_lab.eval.outputs import METADATA_KEYS, read_samples
from arc_lab.stage_kinds import STAGE_KINDS, trained_kinds

METRICS = ("acc", "acc_norm")
TASK_FIELDS = ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")
CONFIG_FILES = ("config.yaml", ".hydra/config.yaml")  # the resolved config first


class ReportError(ValueError):
    """The run folders cannot be reported on as asked (the message names the file or option)."""


@dataclass(frozen=True)
class TaskMetrics:
    """One task's aggregate metrics of one run, as written to ``metrics.json``."""

    acc: float
    acc_stderr: float | None
    acc_norm: float
    acc_norm_stderr: float | None
    n: int
    num_fewshot: int | None
    dataset_fingerprint: str | None

    def value(self, metric: str) -> float:
        """The mean of ``metric`` (``acc`` or ``acc_norm``)."""
        return float(getattr(self, metric))

    def stderr(self, metric: str) -> float | None:
        """The standard error of ``metric``; None when the evaluator gave none (e.g. n = 1)."""
        return getattr(self, f"{metric}_stderr")


@dataclass
class Run:
    """One evaluated run folder.

    Attributes:
        path: the run folder (holds ``metrics.json`` and ``samples/``).
        rel: the folder relative to the report root, as text ("." for the root itself).
        label: a short unique name for tables and plots.
        stage: ``stage.name`` from the run's config, if any.
        objective: ``objective.name`` from the run's config, if any.
        experiment: the experiment ``name`` from the run's config, if any.
        tasks: per-task metrics.
        model_fingerprint: the evaluated model's fingerprint, if recorded.
        overrides: Hydra's saved command-line overrides (tell the runs of a sweep apart).
        seed: the run's ``seed`` from its config (None when the folder has no config).
        chain: the pipeline's label of the final model (``cpt→dpo``), None without ``chain.json``.
    """

    path: Path
    rel: str
    label: str
    stage: str | None
    objective: str | None
    experiment: str | None
    tasks: dict[str, TaskMetrics]
    model_fingerprint: str | None
    overrides: list[str]
    seed: int | None = None
    chain: str | None = None


# --- discovery and labels ----------------------------------------------------------------------------


def natural_key(text: str) -> list[Any]:
    """Sort key that orders "2" before "10" (multirun subfolders are numbered)."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None  # lm-eval writes "N/A" for a stderr it cannot compute


def _parse_task(task: str, entry: Any, path: Path) -> TaskMetrics:
    if not isinstance(entry, Mapping):
        raise ReportError(f"{path}: task {task!r} should map to an object of metrics, got {entry!r}")
    missing = [k for k in TASK_FIELDS if k not in entry]
    if missing:
        raise ReportError(f"{path}: task {task!r} lacks field(s) {missing}")
    acc, acc_norm = _float_or_none(entry["acc"]), _float_or_none(entry["acc_norm"])
    if acc is None or acc_norm is None:
        raise ReportError(
            f"{path}: task {task!r} has no numeric acc/acc_norm ({entry['acc']!r}, {entry['acc_norm']!r})"
        )
    return TaskMetrics(
        acc=acc,
        acc_stderr=_float_or_none(entry["acc_stderr"]),
        acc_norm=acc_norm,
        acc_norm_stderr=_float_or_none(entry["acc_norm_stderr"]),
        n=int(entry["n"]),
        num_fewshot=entry.get("num_fewshot"),
        dataset_fingerprint=entry.get("dataset_fingerprint"),
    )


def read_metrics(path: Path) -> tuple[dict[str, TaskMetrics], str | None]:
    """Parse a run's ``metrics.json`` into per-task metrics and the model fingerprint."""
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, Mapping):
        raise ReportError(f"{path}: expected a JSON object of tasks, got {type(raw).__name__}")
    tasks = {k: _parse_task(k, v, path) for k, v in raw.items() if k not in METADATA_KEYS}
    if not tasks:
        raise ReportError(f"{path}: holds no task metrics")
    return tasks, raw.get("model_fingerprint")


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config as a plain dict ({} when the folder has none)."""
    from omegaconf import OmegaConf  # imported lazily: only needed when a config exists

    for name in CONFIG_FILES:
        path = run_dir / name
        if path.is_file():
            cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            if not isinstance(cfg, dict):
                raise ReportError(f"{path}: expected a mapping at the top level")
            return cfg
    return {}


def _get(cfg: Mapping[str, Any], dotted: str) -> str | None:
    node: Any = cfg
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return None if node is None else str(node)


def config_label(cfg: Mapping[str, Any]) -> str | None:
    """A short label from a run config, in the pipeline's chain-label format (``dpo``, ``cpt→dpo``,
    ``cpt→dpo[simpo]``: the objective in brackets when it is not the stage kind's natural one), or
    ``eval/<model>``, or the experiment name.

    Returns None when the config says nothing useful (the caller falls back to the folder).
    """
    stage, objective = _get(cfg, "stage.name"), _get(cfg, "objective.name")
    init, model, name = _get(cfg, "stage.init"), _get(cfg, "model.name"), _get(cfg, "name")
    if stage is None:
        return name if name not in (None, "default") else None
    if stage == "eval":
        core = f"eval/{model}" if model else "eval"
    else:
        kind = STAGE_KINDS.get(stage)
        natural = kind.default_objective if kind is not None else None
        core = f"{stage}[{objective}]" if objective and objective != natural else stage
    return f"{init}→{core}" if init in trained_kinds() else core


def chain_label(run_dir: Path) -> str | None:
    """The label arc_lab's pipeline gave the run's final model in ``chain.json`` (``base``, ``cpt``,
    ``sft→dpo``, ``cpt→dpo[simpo]``), or None for folders without one."""
    path = run_dir / "chain.json"
    if not path.is_file():
        return None
    evals = [c for c in json.loads(path.read_text()) if c.get("kind") == "eval"]
    return evals[-1]["label"] if evals else None


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra saved for the run (``.hydra/overrides.yaml``), or []."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    overrides = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(overrides, list):
        raise ReportError(f"{path}: expected a list of overrides")
    return [str(o) for o in overrides]


def _duplicate_groups(runs: Sequence[Run]) -> list[list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return [g for g in groups.values() if len(g) > 1]


def _refine_group(group: list[Run]) -> None:
    """Tell equal labels apart: by the sweep overrides that differ, else experiment name, else folder."""
    common = set.intersection(*(set(r.overrides) for r in group))
    extra = [[o for o in r.overrides if o not in common] for r in group]
    experiments = [r.experiment for r in group]
    if all(extra) and len({tuple(e) for e in extra}) == len(group):
        for run, e in zip(group, extra, strict=True):
            run.label = f"{run.label} [{', '.join(e)}]"
    elif None not in experiments and len(set(experiments)) == len(group):
        for run in group:
            run.label = f"{run.experiment}:{run.label}"
    else:
        for run in group:
            run.label = f"{run.label} ({run.rel})"


def _make_unique(runs: list[Run]) -> None:
    """Make every run's label unique (a multirun sweep gives many runs the same config label)."""
    for group in _duplicate_groups(runs):
        _refine_group(group)
    for group in _duplicate_groups(runs):  # a refined label may still collide with another run's
        for run in group:
            run.label = f"{run.label} ({run.rel})"


def load_run(run_dir: Path, root: Path) -> Run:
    """Read one run folder (``metrics.json`` plus, if present, its config)."""
    tasks, fingerprint = read_metrics(run_dir / "metrics.json")
    cfg = read_config(run_dir)
    rel = run_dir.relative_to(root).as_posix()
    chain = chain_label(run_dir)
    label = chain or config_label(cfg) or (rel if rel != "." else run_dir.name)
    experiment = _get(cfg, "name")
    seed = _get(cfg, "seed")
    return Run(
        path=run_dir,
        rel=rel,
        label=label,
        stage=_get(cfg, "stage.name"),
        objective=_get(cfg, "objective.name"),
        experiment=experiment if experiment != "default" else None,
        tasks=tasks,
        model_fingerprint=fingerprint,
        overrides=read_overrides(run_dir),
        seed=int(seed) if seed is not None else None,
        chain=chain,
    )


def discover_runs(root: Path) -> list[Run]:
    """Every folder under ``root`` (itself included) holding a ``metrics.json``, in natural folder order.

    Raises:
        ReportError: if ``root`` is not a directory or holds no run.
    """
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory")
    dirs = sorted({p.parent for p in root.rglob("metrics.json")}, key=lambda p: natural_key(p.as_posix()))
    if not dirs:
        raise ReportError(f"{root}: no metrics.json found in it or any subfolder; is this an outputs dir?")
    runs = [load_run(d, root) for d in dirs]
    _make_unique(runs)
    return runs


# --- samples and comparisons -------------------------------------------------------------------------


def samples_path(run: Run, task: str) -> Path:
    """``samples/<task>.jsonl``, or ``samples/<task>.jsonl.gz`` (a committed study) when only that exists."""
    path = run.path / "samples" / f"{task}.jsonl"
    gz = path.with_name(path.name + ".gz")
    return gz if not path.is_file() and gz.is_file() else path


def load_samples(run: Run, task: str) -> list[dict[str, Any]]:
    """A run's per-item records for ``task``, checked against its ``metrics.json``.

    Raises:
        ReportError: if the file is malformed, or its item count or accuracy disagrees with metrics.json.
    """
    path = samples_path(run, task)
    try:
        records = read_samples(path)
    except DataError as err:  # names the file and line
        raise ReportError(str(err)) from None
    m = run.tasks[task]
    if len(records) != m.n:
        raise ReportError(f"{path}: {len(records)} sample lines but metrics.json says n={m.n}")
    for metric in METRICS:
        mean = float(np.mean([r[metric] for r in records])) if records else float("nan")
        if not math.isclose(mean, m.value(metric), abs_tol=1e-6):
            raise ReportError(
                f"{path}: mean {metric} of the samples is {mean:.6f} but metrics.json says "
                f"{m.value(metric):.6f}; the folder is inconsistent"
            )
    return records
