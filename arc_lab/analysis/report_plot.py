"""``report.png`` of :mod:`arc_lab.analysis.report`: acc vs acc_norm per run, with 95% CI bars, one panel per task."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arc_lab.analysis.runs import Run

METRICS = ("acc", "acc_norm")


COLORS = {"acc": "#1f77b4", "acc_norm": "#d62728"}
MARKERS = {"acc": "o", "acc_norm": "s"}
OFFSETS = {"acc": -0.17, "acc_norm": 0.17}  # acc just above, acc_norm just below each run's row


def _ci_halfwidths(value: float, stderr: float | None) -> list[list[float]] | None:
    """Asymmetric error-bar lengths of ``value ± 1.96·stderr``, clipped to the [0, 1] accuracy range."""
    if stderr is None:
        return None
    half = 1.96 * stderr
    return [[min(half, value)], [min(half, 1.0 - value)]]


def _plot_panel(ax: Any, task: str, runs: Sequence[Run], base: Run) -> None:
    """One task's panel: a row per run, acc and acc_norm markers with 95% CI bars and their values."""
    for metric in METRICS:
        for y, run in enumerate(runs):
            m = run.tasks.get(task)
            if m is None:
                continue
            value, yy = m.value(metric), y + OFFSETS[metric]
            xerr = _ci_halfwidths(value, m.stderr(metric))
            ax.errorbar(
                value, yy, xerr=xerr, fmt=MARKERS[metric], color=COLORS[metric], ms=7, capsize=4, lw=1.6
            )
            # the value as text just right of the error bar, on the marker's own line (never overlaps)
            ax.annotate(
                f"{value:.3f}",
                (value + (xerr[1][0] if xerr else 0.0), yy),
                xytext=(5, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize=9,
                color=COLORS[metric],
            )
        if task in base.tasks:
            ax.axvline(base.tasks[task].value(metric), color=COLORS[metric], ls=":", lw=1.2, alpha=0.8)
    row = runs.index(base)
    ax.axhspan(row - 0.45, row + 0.45, color="0.9", zorder=0)
    ax.margins(x=0.12)  # room for the value labels right of the bars
    ax.set_title(task, fontsize=13)
    ax.set_xlabel("accuracy", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labelsize=10)


def _label_rows(ax: Any, runs: Sequence[Run], base: Run) -> None:
    """Run labels on a left-column panel, the baseline in bold, first run on top."""
    ax.set_yticks(range(len(runs)), [r.label for r in runs], fontsize=11)
    ax.get_yticklabels()[runs.index(base)].set_fontweight("bold")
    ax.set_ylim(len(runs) - 0.5, -0.5)


def plot_runs(runs: Sequence[Run], tasks: Sequence[str], base: Run, path: Path) -> None:
    """Dot plot of acc and acc_norm (±1.96·stderr) per run, one panel per task (two per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols, nrows = min(2, len(tasks)), math.ceil(len(tasks) / 2)
    panel_h = 0.9 + 0.65 * len(runs)  # inches: title + axis + a row per run
    width = 1.0 + 5.2 * ncols + 0.075 * max(len(r.label) for r in runs)
    height = 1.1 + nrows * panel_h
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, height), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, task in zip(axes.flat, tasks, strict=False):
        _plot_panel(ax, task, runs, base)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        _label_rows(ax, runs, base)
    handles = [plt.Line2D([], [], color=COLORS[m], marker=MARKERS[m], ls="", ms=7, label=m) for m in METRICS]
    handles.append(plt.Line2D([], [], color="0.4", ls=":", label="baseline value"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=11, frameon=False)
    fig.suptitle(
        f"acc vs acc_norm per run: mean with 95% CI (±1.96·stderr)\nbaseline (shaded): {base.label}",
        fontsize=14,
    )
    fig.savefig(path, dpi=150)
    plt.close(fig)
