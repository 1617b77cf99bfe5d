"""The quickstart table: the cells of ``experiment=quickstart_controls`` on the built-in set, with standard
errors clustered by entity and a paired test of CPT→DPO against DPO without CPT.

Usage::

    python -m arc_lab.quickstart <sweep dir> [--n-resamples 10000] [--seed 0]

A sweep of several seeds (``experiment=quickstart_seeds``) gets the seed-aware tables instead
(:func:`seeds_table`): per row mean ± sd over seeds, and CPT→DPO against each control with an interval
that carries seed and item noise.

Prints the table and writes it to ``<sweep dir>/summary.md``. Runs are found and paired with
:mod:`arc_lab.analysis.report` (``discover_runs``, ``load_samples``, ``compare_task``: McNemar's exact test and the
paired bootstrap of :mod:`arc_lab.analysis.stats`); the clustered standard error is
:func:`arc_lab.analysis.stats.clustered_stderr` with each question's entity (:func:`arc_lab.data.builtin.builtin_entity`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from arc_lab.analysis.report import compare_task, seed_section
from arc_lab.analysis.runs import ReportError, Run, chain_label, discover_runs, load_samples
from arc_lab.analysis.stats import PairingError, clustered_stderr
from arc_lab.data.builtin import builtin_entity
from arc_lab.run.runinfo import atomic_write_text

TASK = "builtin"
CHANCE = 0.25
#: Table order of the rows (labels as the pipeline writes them, plus the shot count).
ORDER = ("base 0-shot", "base 5-shot", "dpo 0-shot", "cpt 0-shot", "cpt→dpo 0-shot")


#: The seed-aware comparisons of the built-in study (experiment=quickstart_seeds), per task: CPT→DPO
#: against each control that could explain its lift; on the cloze probe, whether CPT stored the facts and
#: whether the tuning stages changed that.
SEED_PAIRS = {
    "builtin": "cpt→dpo:dpo,cpt→dpo:cpt,cpt→dpo:cpt→sft,cpt→dpo:base 0-shot,cpt→sft:dpo,cpt:base 0-shot",
    "builtin_cloze": "cpt:base 0-shot,cpt→dpo:cpt,cpt→sft:cpt",
}


def row_label(run: Run) -> str:
    """``<chain label> <k>-shot`` (``base 5-shot``, ``cpt→dpo 0-shot``)."""
    return f"{chain_label(run.path) or run.label} {run.tasks[TASK].num_fewshot or 0}-shot"


def controls_table(root: str | Path, *, n_resamples: int = 10_000, seed: int = 0) -> str:
    """The markdown table and the CPT→DPO vs DPO test for every run under ``root`` scored on ``builtin``.

    Raises:
        ReportError: no run scored ``builtin``, or run folders are inconsistent.
    """
    runs = [r for r in discover_runs(Path(root)) if TASK in r.tasks]
    if not runs:
        raise ReportError(f"{root}: no run scored the {TASK} task")
    by_label = {row_label(r): r for r in runs}
    labels = sorted(by_label, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
    lines = [
        "| model | acc | acc_norm | n | entities |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        run = by_label[label]
        samples = load_samples(run, TASK)
        clusters = [builtin_entity(s["id"]) for s in samples]
        cells = []
        for metric in ("acc", "acc_norm"):
            values = [float(s[metric]) for s in samples]
            cells.append(f"{run.tasks[TASK].value(metric):.4f} ± {clustered_stderr(values, clusters):.4f}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {len(samples)} | {len(set(clusters))} |")
    lines += [
        "",
        f"`±`: standard error clustered by entity (the questions about one invented entity are not "
        f"independent), CR1: sqrt(G/(G-1) · Σ_g (Σ_(i in g) (x_i - mean))²) / n over G entities; "
        f"chance = {CHANCE}.",
    ]
    lines += _paired_lines(by_label, n_resamples=n_resamples, seed=seed)
    lines += [
        "",
        "One training seed: the ± and the paired test carry item noise only; seed noise is not measured "
        "(`experiment=quickstart_seeds` runs three seeds; `python -m arc_lab.quickstart <its dir>`).",
    ]
    return "\n".join(lines)


def seeds_table(root: str | Path) -> str:
    """The seed-aware tables of a multi-seed built-in study: each task's rows across seeds and the
    comparisons of :data:`SEED_PAIRS` (:mod:`arc_lab.analysis.seed_report`)."""
    runs = discover_runs(Path(root))
    tasks = [t for t in SEED_PAIRS if any(t in r.tasks for r in runs)]
    out: list[str] = []
    for task in tasks:
        out += seed_section(runs, [task], SEED_PAIRS[task])[2:]
    return "\n".join(out).rstrip()


def _paired_lines(by_label: dict[str, Run], *, n_resamples: int, seed: int) -> list[str]:
    run, base = by_label.get("cpt→dpo 0-shot"), by_label.get("dpo 0-shot")
    if run is None or base is None:
        return ["", "CPT→DPO vs DPO: not both in this sweep, no paired test."]
    warnings: list[str] = []
    comp = compare_task(run, base, TASK, n_resamples=n_resamples, seed=seed, warnings=warnings)
    if comp is None:
        return ["", f"CPT→DPO vs DPO: {'; '.join(warnings)}"]
    out = [
        "",
        f"CPT→DPO vs DPO without CPT, paired on the same {next(iter(comp.by_metric.values())).n} questions:",
    ]
    for metric, c in comp.by_metric.items():
        out.append(
            f"- {metric}: Δ = {c.boot.diff:+.4f}, 95% CI [{c.boot.low:+.4f}, {c.boot.high:+.4f}] (paired bootstrap, "
            f"{n_resamples} resamples); McNemar b = {c.mcnemar.b} (only CPT→DPO right), c = {c.mcnemar.c} "
            f"(only DPO right), p = {c.mcnemar.p:.3g}"
        )
    out.append(
        "  (McNemar and the bootstrap treat questions as independent; the two questions of an entity are "
        "not quite, so read p as slightly optimistic.)"
    )
    return out + [f"- note: {w}" for w in warnings]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the table and write ``<sweep dir>/summary.md``."""
    parser = argparse.ArgumentParser(prog="python -m arc_lab.quickstart", description=__doc__.split("\n")[0])
    parser.add_argument("root", help="the sweep directory of experiment=quickstart_controls")
    parser.add_argument("--n-resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    try:
        seeds = {r.seed for r in discover_runs(Path(args.root))}
        if len(seeds) > 1:
            table = seeds_table(args.root)
        else:
            table = controls_table(args.root, n_resamples=args.n_resamples, seed=args.seed)
    except (ReportError, PairingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_text(Path(args.root) / "summary.md", table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
