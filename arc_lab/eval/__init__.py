"""lm-eval-parity evaluation: tasks, few-shot prompts, prefix-shared scoring, metrics, lm_eval backend.

Entry point: :func:`run_eval` (tasks by name, files in ``out_dir``),
:func:`evaluate_items` (in-memory MCItems), :func:`flat_metrics` (W&B view).

The names below are imported on first use (PEP 562), so that importing a light submodule
(``arc_lab.eval.runner`` for ``BACKENDS`` while the config is validated, ``arc_lab.eval.outputs`` for the
report) does not import torch through the scoring engine.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "BACKENDS": "arc_lab.eval.runner",
    "aggregate": "arc_lab.eval.metrics",
    "compare_samples": "arc_lab.eval.runner",
    "evaluate_items": "arc_lab.eval.ours",
    "flat_metrics": "arc_lab.eval.metrics",
    "run_eval": "arc_lab.eval.runner",
    "score_item": "arc_lab.eval.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
