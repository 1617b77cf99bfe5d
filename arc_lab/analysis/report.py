"""Report on a set of evaluated runs: ``report.md`` (tables + paired significance) and ``report.png``.

Usage::

    python -m arc_lab.report <multirun or outputs dir> [--baseline LABEL_OR_PATH] [--task arc_challenge]
                             [--out DIR] [--n-resamples 10000] [--seed 0] [--pairs a:b,...|all]
                             [--seed-table]

Every folder under the given directory that holds a ``metrics.json`` is a run (multirun subfolders
``0/``, ``1/``... and a pipeline's nested stage runs alike). A run is labelled from its resolved config
(``config.yaml``, else ``.hydra/config.yaml``: ``stage.init``, ``stage.name``, ``objective.name``,
``model.name``, ``name``), falling back to its folder. Each run is compared with one baseline run on the
items both scored (paired by ``doc_id`` from ``samples/<task>.jsonl``): the difference in acc and
acc_norm, its paired-bootstrap 95% CI, McNemar's exact p-value, and a flag where acc and acc_norm
disagree about which run is better (the recipe's DPO-vs-SimPO choice turned on such a disagreement).

``## Across seeds`` groups the runs into rows across their ``seed`` (:mod:`arc_lab.analysis.seed_report`): mean ±
sd per row, and row differences whose interval carries seed noise and item noise, marked *within seed
noise* when it includes 0. ``--seed-table`` prints only that section (what the README's tables are
rendered from).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arc_lab.analysis.report_plot import plot_runs
from arc_lab.analysis.runs import (  # re-exported: arc_lab.analysis.report was their home before arc_lab.analysis.runs
    METRICS,
    ReportError,
    Run,
    TaskMetrics,
    chain_label,
    config_label,
    discover_runs,
    load_run,
    load_samples,
    natural_key,
    read_config,
    read_metrics,
    read_overrides,
    samples_path,
)
from arc_lab.analysis.seed_report import group_rows, parse_pairs, seed_table
from arc_lab.analysis.stats import PairedComparison, PairingError, compare_paired, disagree, pair_samples

__all__ = [
    "METRICS",
    "ReportError",
    "Run",
    "RunComparison",
    "TaskMetrics",
    "build_report",
    "chain_label",
    "choose_baseline",
    "compare_task",
    "config_label",
    "discover_runs",
    "load_run",
    "load_samples",
    "main",
    "read_config",
    "read_metrics",
    "read_overrides",
    "samples_path",
    "seed_section",
]

FLAG = "⚠ disagree"


@dataclass(frozen=True)
class RunComparison:
    """One run vs the baseline on one task: ``{metric: PairedComparison}`` (X = the run, Y = baseline)."""

    run: str
    task: str
    by_metric: dict[str, PairedComparison]


# --- baseline ----------------------------------------------------------------------------------------


def choose_baseline(runs: Sequence[Run], spec: str | None, root: Path) -> tuple[Run, str]:
    """Pick the baseline run and say why.

    Args:
        runs: the discovered runs.
        spec: ``--baseline``: a run label, or a run folder (absolute, or relative to ``root`` or the cwd);
            None picks the first run whose stage is ``eval``, else whose label contains "base", else the
            first run by label.
        root: the report root.

    Returns:
        The baseline and a sentence saying how it was chosen.

    Raises:
        ReportError: if ``spec`` matches no run.
    """
    if spec is not None:
        for run in runs:
            if run.label == spec:
                return run, f"given by --baseline {spec!r} (label)"
        for cand in (Path(spec), root / spec):
            for run in runs:
                if cand.exists() and cand.resolve() == run.path.resolve():
                    return run, f"given by --baseline {spec!r} (folder)"
        labels = ", ".join(repr(r.label) for r in runs)
        raise ReportError(f"--baseline {spec!r} matches no run label or run folder; labels: {labels}")
    by_label = sorted(runs, key=lambda r: natural_key(r.label))
    evals = [r for r in by_label if r.stage == "eval"]
    if evals:
        return evals[0], 'default: the first run whose stage is "eval"'
    based = [r for r in by_label if "base" in r.label.lower()]
    if based:
        return based[0], 'default: the first run whose label contains "base"'
    return by_label[0], 'default: no "eval"-stage or "base" run, so the first run by label'


def compare_task(
    run: Run, base: Run, task: str, *, n_resamples: int, seed: int, warnings: list[str]
) -> RunComparison | None:
    """Compare ``run`` with ``base`` on ``task`` (appends loud notes to ``warnings``); None without samples."""
    missing = [r.rel for r in (run, base) if not samples_path(r, task).is_file()]
    if missing:
        warnings.append(
            f"{task}: no samples/{task}.jsonl in {missing}: no paired statistics for `{run.label}`"
        )
        return None
    paired = pair_samples(load_samples(run, task), load_samples(base, task), task)
    if not paired.complete:
        warnings.append(
            f"{task}: `{run.label}` vs baseline compared on the {len(paired.doc_ids)} doc_ids both scored; "
            f"{len(paired.only_a)} only in the run{_ids(paired.only_a)}, "
            f"{len(paired.only_b)} only in the baseline{_ids(paired.only_b)}"
        )
    return RunComparison(run.label, task, compare_paired(paired, METRICS, n_resamples=n_resamples, seed=seed))


def _ids(ids: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return f" (doc_ids {shown}{', …' if len(ids) > limit else ''})" if ids else ""


def metric_disagreements(runs: Sequence[Run], tasks: Sequence[str]) -> list[str]:
    """Every pair of runs whose acc and acc_norm (from metrics.json) rank them oppositely, as text lines."""
    lines = []
    for task in tasks:
        for a, b in itertools.combinations([r for r in runs if task in r.tasks], 2):
            ma, mb = a.tasks[task], b.tasks[task]
            d_acc, d_norm = ma.acc - mb.acc, ma.acc_norm - mb.acc_norm
            if disagree(d_acc, d_norm):
                win_acc, win_norm = (a, b) if d_acc > 0 else (b, a)
                lines.append(
                    f"{task}: acc favours `{win_acc.label}` (by {abs(d_acc):.4f}), "
                    f"acc_norm favours `{win_norm.label}` (by {abs(d_norm):.4f})"
                )
    return lines


# --- markdown ----------------------------------------------------------------------------------------

RUNS_HEADER = "run|stage|objective|experiment|folder|model fingerprint".split("|")
ACC_HEADER = "run|task|acc|acc_norm|n|shots".split("|")
COMPARE_HEADER = "run|metric|value|baseline|Δ|95% CI|McNemar p|b|c|n|acc vs acc_norm".split("|")
COMPARE_ROW = (
    "| `{run}` | {c.metric} | {c.x_mean:.4f} | {c.y_mean:.4f} | {c.boot.diff:+.4f} | "
    "[{c.boot.low:+.4f}, {c.boot.high:+.4f}] | {c.mcnemar.p:.4g} | {c.mcnemar.b} | {c.mcnemar.c} | {c.n} | {flag} |"
)


def _pm(value: float, stderr: float | None) -> str:
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f} ± n/a"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def runs_section(runs: Sequence[Run], tasks: Sequence[str]) -> list[str]:
    """The run list and the runs × tasks accuracy table (mean ± stderr, n, shots)."""
    out = ["## Runs", "", *_table(RUNS_HEADER, [])]
    for r in runs:
        objective = "—" if r.stage == "eval" else r.objective or ""
        fingerprint = (r.model_fingerprint or "")[:12]
        out.append(
            f"| `{r.label}` | {r.stage or ''} | {objective} | {r.experiment or ''} | `{r.rel}` | {fingerprint} |"
        )
    out += [
        "",
        "## Accuracy",
        "",
        "Mean ± standard error (lm-eval's closed-form stderr), from `metrics.json`.",
        "",
    ]
    out += _table(ACC_HEADER, [])
    for t, r in ((t, r) for t in tasks for r in runs if t in r.tasks):
        m, shots = r.tasks[t], "" if r.tasks[t].num_fewshot is None else r.tasks[t].num_fewshot
        out.append(
            f"| `{r.label}` | {t} | {_pm(m.acc, m.acc_stderr)} | {_pm(m.acc_norm, m.acc_norm_stderr)} | {m.n} | {shots} |"
        )
    return out


def comparison_lines(comp: RunComparison) -> list[str]:
    """One run's table rows (acc, acc_norm); both carry the flag when the metrics disagree on the sign."""
    acc, norm = comp.by_metric["acc"].boot.diff, comp.by_metric["acc_norm"].boot.diff
    flag = FLAG if disagree(acc, norm) else ""
    return [COMPARE_ROW.format(run=comp.run, c=c, flag=flag) for c in comp.by_metric.values()]


def comparison_section(
    base: Run, reason: str, comps: Mapping[str, list[RunComparison]], n_resamples: int, seed: int
) -> list[str]:
    """Per-task tables of every run vs the baseline."""
    out = [f"## Paired comparison vs baseline `{base.label}`", ""]
    out += [
        f"Baseline: `{base.label}` (`{base.rel}`), {reason}.",
        "",
        "Δ = run − baseline on the items both scored (paired by doc_id). 95% CI: paired percentile "
        f"bootstrap ({n_resamples} resamples, seed {seed}). p: McNemar's exact two-sided test. "
        "b: items only the run gets right; c: items only the baseline gets right. "
        f"`{FLAG}`: acc and acc_norm disagree about which of the two is better.",
        "",
    ]
    for task, task_comps in comps.items():
        out += [f"### {task}", ""]
        if not task_comps:
            out += ["(no other run with paired samples on this task)", ""]
            continue
        out += _table(COMPARE_HEADER, [])
        out += [line for comp in task_comps for line in comparison_lines(comp)] + [""]
    return out


def seed_section(runs: Sequence[Run], tasks: Sequence[str], pairs: str | None = None) -> list[str]:
    """``## Across seeds``: each task's rows over seeds and the seed-aware differences
    (:mod:`arc_lab.analysis.seed_report`; ``pairs``: ``a:b,...``, ``all``, or None = every row vs the base row)."""
    out = ["## Across seeds", ""]
    for task in tasks:
        rows = group_rows(runs, task)
        if rows:
            out += seed_table(runs, task, parse_pairs(pairs, rows, None))
    return out


def render_markdown(
    root: Path,
    runs: Sequence[Run],
    tasks: Sequence[str],
    comparison: list[str],
    warnings: Sequence[str],
    pairs: str | None = None,
) -> str:
    """The whole ``report.md`` text, around an already rendered :func:`comparison_section`."""
    out = [
        f"# arc_lab report: `{root}`",
        "",
        f"{len(runs)} run(s), task(s): {', '.join(tasks)}. Plot: `report.png`.",
    ]
    if warnings:
        out += ["", "## ⚠ Warnings", ""] + [f"- **{w}**" for w in warnings]
    out += ["", *runs_section(runs, tasks), "", *comparison]
    out += seed_section(runs, tasks, pairs)
    lines = metric_disagreements(runs, tasks)
    out += ["## acc vs acc_norm disagreements between any two runs", ""]
    out += ["Pairs whose ranking flips with the metric (from metrics.json; no significance implied):", ""]
    out += [f"- {line}" for line in lines] if lines else ["- none"]
    return "\n".join(out) + "\n"


# --- entry points ------------------------------------------------------------------------------------


def _select_tasks(runs: Sequence[Run], task: str | None) -> list[str]:
    all_tasks = sorted({t for r in runs for t in r.tasks})
    if task is None:
        return all_tasks
    if task not in all_tasks:
        raise ReportError(f"--task {task!r}: no run has it; tasks found: {all_tasks}")
    return [task]


def build_report(
    root: str | Path,
    *,
    baseline: str | None = None,
    task: str | None = None,
    out_dir: str | Path | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
    pairs: str | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.png`` for every run under ``root``.

    Args:
        root: a multirun or outputs directory (or a single run folder).
        baseline: the run to compare against, by label or folder; None chooses one (see
            :func:`choose_baseline`).
        task: report only this task; None reports every task found.
        out_dir: where to write; defaults to ``root``.
        n_resamples: paired-bootstrap resamples per comparison.
        seed: bootstrap seed (the same seed gives the same report).
        pairs: the row pairs of the seed-aware section (``a:b,...``, ``all``; None: every row vs base).

    Returns:
        The paths of ``report.md`` and ``report.png``.

    Raises:
        ReportError: on missing or inconsistent run files or options that match nothing.
        arc_lab.analysis.stats.PairingError: if two runs scored different items under the same doc_id.
    """
    root = Path(root)
    runs = discover_runs(root)
    tasks = _select_tasks(runs, task)
    runs = [r for r in runs if any(t in r.tasks for t in tasks)]
    base, reason = choose_baseline(runs, baseline, root)
    warnings: list[str] = []
    comps: dict[str, list[RunComparison]] = {t: [] for t in tasks}
    for t in tasks:
        if t not in base.tasks:
            warnings.append(f"{t}: the baseline `{base.label}` was not evaluated on it; no comparisons")
            continue
        for run in (r for r in runs if r is not base and t in r.tasks):
            comp = compare_task(run, base, t, n_resamples=n_resamples, seed=seed, warnings=warnings)
            comps[t] += [comp] if comp is not None else []
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out / "report.md", out / "report.png"
    comparison = comparison_section(base, reason, comps, n_resamples, seed)
    md_path.write_text(render_markdown(root, runs, tasks, comparison, warnings, pairs))
    plot_runs(runs, tasks, base, png_path)
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    return md_path, png_path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m arc_lab.report <dir> [--baseline ...] [--task ...] [--out ...]``."""
    parser = argparse.ArgumentParser(prog="python -m arc_lab.report", description=__doc__.split("\n")[0])
    parser.add_argument("root", help="multirun or outputs directory (searched recursively for metrics.json)")
    parser.add_argument("--baseline", help="baseline run label or folder (default: the eval-stage/base run)")
    parser.add_argument("--task", help="report only this task (default: all tasks found)")
    parser.add_argument("--out", help="output directory for report.md/report.png (default: the root)")
    parser.add_argument("--n-resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--pairs",
        help="row pairs of the seed-aware tables: 'a:b,c:d' (row names as the tables print them) or 'all' "
        "(default: every row vs the base row)",
    )
    parser.add_argument(
        "--seed-table",
        action="store_true",
        help="print only the seed-aware tables (rows across seeds, paired differences) and write nothing",
    )
    args = parser.parse_args(argv)
    try:
        if args.seed_table:
            runs = discover_runs(Path(args.root))
            print("\n".join(seed_section(runs, _select_tasks(runs, args.task), args.pairs)[2:]).rstrip())
            return 0
        md_path, png_path = build_report(
            args.root,
            baseline=args.baseline,
            task=args.task,
            out_dir=args.out,
            n_resamples=args.n_resamples,
            seed=args.seed,
            pairs=args.pairs,
        )
    except (ReportError, PairingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {md_path}\nwrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
