"""lm-eval-parity evaluation: tasks, few-shot prompts, prefix-shared scoring, metrics, lm_eval backend.

Entry point: :func:`run_eval` (tasks by name, files in ``out_dir``),
:func:`evaluate_items` (in-memory MCItems), :func:`flat_metrics` (W&B view).
"""

from __future__ import annotations

from arc_lab.eval.metrics import aggregate, flat_metrics, score_item
from arc_lab.eval.ours import evaluate_items
from arc_lab.eval.runner import BACKENDS, compare_samples, run_eval

__all__ = [
    "BACKENDS",
    "aggregate",
    "compare_samples",
    "evaluate_items",
    "flat_metrics",
    "run_eval",
    "score_item",
]
