"""Seed-aware tables: the cells of a sweep grouped into rows across seeds, and row differences whose
interval carries seed noise as well as item noise.

A *row* is one recipe (``cpt→dpo`` 0-shot); its *cells* are the runs of that recipe at different ``seed``
values. Cells are grouped by their label and their Hydra overrides without ``seed=`` (and without
``output_root=``), so the cells of one ``-m ... seed=0,1,2`` sweep, or of one sweep per seed, fall into
the same rows. A row whose cells all scored one model (the untrained base model: its evaluation does not
depend on the seed and is computed once) is *seed-independent*; compared with a trained row, its one
outcome vector is paired with every seed of the other row.

Per row: mean ± sd over seeds and each seed's value. Per compared pair of rows: the mean over seeds of
the paired difference, with the interval of :func:`arc_lab.analysis.stats.seed_item_diff` (seeds and items, items
clustered by entity where the task has entities), each seed's difference and McNemar p, and a verdict:

- ``beyond seed noise``: the interval excludes 0, with at least :data:`MIN_CALIBRATED_SEEDS` seeds;
- ``within seed noise``: the interval includes 0;
- with 2 seeds the verdict says that the interval is not calibrated; with 1 seed that seed noise is not
  measured (the interval carries item noise only).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arc_lab.analysis.runs import METRICS, ReportError, Run, load_samples
from arc_lab.analysis.stats import (
    MIN_CALIBRATED_SEEDS,
    SeedAwareDiff,
    mcnemar_exact,
    pair_samples,
    seed_item_diff,
)

#: Overrides that do not make a different row (the seed, where the caches live).
NOT_ROW = ("seed=", "output_root=", "+seed=")


def _builtin_cluster(item_id: str) -> str:
    from arc_lab.data.builtin import builtin_entity

    return builtin_entity(item_id)


#: Tasks whose items come in correlated groups: the cluster of an item from its ``id``.
CLUSTERS: dict[str, Callable[[str], str]] = {"builtin": _builtin_cluster, "builtin_cloze": _builtin_cluster}


@dataclass
class Row:
    """One recipe across seeds.

    Attributes:
        name: the row's label in tables (``cpt→dpo``; ``base 5-shot`` where two rows share a chain label).
        cells: the runs, by seed (a run without a config is seed None).
        seed_independent: every cell scored the same model (the untrained base model).
    """

    name: str
    cells: dict[int | None, Run] = field(default_factory=dict)
    seed_independent: bool = False

    @property
    def seeds(self) -> list[int | None]:
        """The seeds of the cells, ascending (None first)."""
        return sorted(self.cells, key=lambda s: -1 if s is None else s)

    def values(self, task: str, metric: str) -> list[float]:
        """``metric`` of each seed's cell, in :attr:`seeds` order (one value for a seed-independent row)."""
        seeds = self.seeds[:1] if self.seed_independent else self.seeds
        return [self.cells[s].tasks[task].value(metric) for s in seeds]


def _row_key(run: Run) -> tuple[str, tuple[str, ...]]:
    overrides = tuple(sorted(o for o in run.overrides if not o.startswith(NOT_ROW)))
    return (run.chain or run.label.split(" [")[0], overrides)


def group_rows(runs: Sequence[Run], task: str) -> list[Row]:
    """The runs that scored ``task``, grouped into rows across seeds, in first-appearance order.

    Raises:
        ReportError: two cells of one row have the same seed (two sweeps of the same recipe in one folder).
    """
    rows: dict[tuple[str, tuple[str, ...]], Row] = {}
    for run in (r for r in runs if task in r.tasks):
        key = _row_key(run)
        row = rows.setdefault(key, Row(name=key[0]))
        if run.seed in row.cells:
            raise ReportError(
                f"{run.rel} and {row.cells[run.seed].rel}: two cells of row {row.name!r} at seed {run.seed}; "
                "report on one sweep of each recipe per seed"
            )
        row.cells[run.seed] = run
    out = list(rows.values())
    for row in out:
        prints = {c.model_fingerprint for c in row.cells.values()}
        row.seed_independent = len(row.cells) > 1 and len(prints) == 1 and None not in prints
        if len(row.cells) == 1:
            (only,) = row.cells.values()
            row.seed_independent = only.stage == "eval"  # an untrained model does not depend on the seed
    _name_rows(out, task)
    return out


def _name_rows(rows: list[Row], task: str) -> None:
    """Tell rows with one chain label apart by their shot count, else by their differing overrides."""
    by_name: dict[str, list[Row]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    for group in (g for g in by_name.values() if len(g) > 1):
        shots = [next(iter(r.cells.values())).tasks[task].num_fewshot or 0 for r in group]
        if len(set(shots)) == len(group):
            for row, k in zip(group, shots, strict=True):
                row.name = f"{row.name} {k}-shot"
            continue
        keys = [set(_row_key(next(iter(r.cells.values())))[1]) for r in group]
        common = set.intersection(*keys)
        for row, own in zip(group, keys, strict=True):
            row.name = f"{row.name} [{', '.join(sorted(own - common))}]"


def find_row(rows: Sequence[Row], name: str) -> Row:
    """The row called ``name``.

    Raises:
        ReportError: no such row; the message lists the rows.
    """
    for row in rows:
        if row.name == name:
            return row
    raise ReportError(f"no row {name!r}; rows: {[r.name for r in rows]}")


# ------------------------------------------------------------------------------------------ comparisons
@dataclass(frozen=True)
class RowComparison:
    """Row ``a`` minus row ``b`` on one task and metric, across the seeds they share."""

    a: str
    b: str
    task: str
    metric: str
    seeds: tuple[int | None, ...]
    diff: SeedAwareDiff
    mcnemar_p: tuple[float, ...]
    n: int

    @property
    def verdict(self) -> str:
        """``beyond seed noise``, ``within seed noise``, or what the seed count does not allow."""
        s = self.diff.n_seeds
        if s == 1:
            return (
                "within item noise; seed noise not measured"
                if self.diff.within_noise
                else ("beyond item noise; seed noise not measured (1 seed)")
            )
        base = "within seed noise" if self.diff.within_noise else "beyond seed noise"
        if s < MIN_CALIBRATED_SEEDS:
            return f"{base} ({s} seeds: interval not calibrated)"
        return base


def _paired_arrays(
    a: Row, b: Row, task: str, metric: str
) -> tuple[list[int | None], np.ndarray, np.ndarray, list[Any], list[float]]:
    """Seeds used, (S, n) outcomes of a and b on the items every seed scored, item ids, McNemar p per seed."""
    if a.seed_independent and b.seed_independent:
        seeds = a.seeds[:1]
    elif a.seed_independent or b.seed_independent:
        seeds = (b if a.seed_independent else a).seeds
    else:
        seeds = [s for s in a.seeds if s in b.cells]
    if not seeds:
        raise ReportError(f"rows {a.name!r} and {b.name!r} share no seed: {a.seeds} vs {b.seeds}")

    def cell(row: Row, seed: int | None) -> Run:
        return row.cells[row.seeds[0]] if row.seed_independent else row.cells[seed]

    per_seed = []
    for s in seeds:
        paired = pair_samples(load_samples(cell(a, s), task), load_samples(cell(b, s), task), task)
        per_seed.append(paired)
    common = set(per_seed[0].doc_ids).intersection(*(p.doc_ids for p in per_seed[1:]))
    doc_ids = [d for d in per_seed[0].doc_ids if d in common]
    xs, ys, ps = [], [], []
    for paired in per_seed:
        pos = {d: i for i, d in enumerate(paired.doc_ids)}
        idx = [pos[d] for d in doc_ids]
        col_a, col_b = paired.outcomes(metric)
        x, y = col_a[idx], col_b[idx]
        xs.append(x)
        ys.append(y)
        ps.append(mcnemar_exact(x, y).p)
    first = {d: r for d, r in zip(per_seed[0].doc_ids, per_seed[0].a, strict=True)}
    ids = [first[d].get("id", d) for d in doc_ids]
    return seeds, np.array(xs), np.array(ys), ids, ps


def compare_rows(a: Row, b: Row, task: str, metric: str) -> RowComparison:
    """Row ``a`` minus row ``b`` (:func:`arc_lab.analysis.stats.seed_item_diff`), items clustered per
    :data:`CLUSTERS`."""
    seeds, x, y, ids, ps = _paired_arrays(a, b, task, metric)
    cluster_of = CLUSTERS.get(task)
    clusters = [cluster_of(i) for i in ids] if cluster_of else None
    return RowComparison(
        a=a.name,
        b=b.name,
        task=task,
        metric=metric,
        seeds=tuple(seeds),
        diff=seed_item_diff(x, y, clusters),
        mcnemar_p=tuple(ps),
        n=x.shape[1],
    )


# ------------------------------------------------------------------------------------------ markdown
def _num(v: float) -> str:
    return f"{v:.4f}"


def _signed(v: float) -> str:
    return f"{v:+.4f}"


def _seed_name(s: int | None) -> str:
    return "—" if s is None else str(s)


def rows_table(rows: Sequence[Row], task: str) -> list[str]:
    """Per row: seeds, mean ± sd over seeds and each seed's value, for acc and acc_norm."""
    out = [
        "| row | seeds | acc mean ± sd | acc by seed | acc_norm mean ± sd | acc_norm by seed | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for metric in METRICS:
            vals = row.values(task, metric)
            mean = statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else None
            cells.append(f"{_num(mean)} ± {'n/a' if sd is None else _num(sd)}")
            cells.append(" / ".join(_num(v) for v in vals))
        seeds = (
            "any (untrained: one model)" if row.seed_independent else ", ".join(map(_seed_name, row.seeds))
        )
        n = next(iter(row.cells.values())).tasks[task].n
        out.append(f"| {row.name} | {seeds} | {' | '.join(cells)} | {n} |")
    return out


def comparisons_table(comps: Sequence[RowComparison]) -> list[str]:
    """One line per comparison and metric."""
    out = [
        "| row | vs | metric | Δ mean | 95% CI (seeds + items) | Δ by seed | McNemar p by seed | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comps:
        by_seed = " / ".join(_signed(v) for v in c.diff.per_seed)
        ps = " / ".join(f"{p:.2g}" for p in c.mcnemar_p)
        out.append(
            f"| {c.a} | {c.b} | {c.metric} | {_signed(c.diff.diff)} | [{_signed(c.diff.low)}, "
            f"{_signed(c.diff.high)}] | {by_seed} | {ps} | {c.verdict} |"
        )
    return out


def method_note(task: str, n_seeds: int) -> list[str]:
    """What the interval carries, in two sentences."""
    clustered = "clustered by entity (CR1)" if task in CLUSTERS else "treated as independent"
    note = (
        f"Δ: row − vs, the mean over seeds of each seed's paired difference; 95% CI: Student t with "
        f"Welch–Satterthwaite df on seed variance + item variance (items {clustered}; "
        "`arc_lab.analysis.stats.seed_item_diff`). McNemar p: each seed's exact test on the items alone."
    )
    if n_seeds == 1:
        note += " **One seed: seed noise is not measured; the intervals carry item noise only.**"
    elif n_seeds < MIN_CALIBRATED_SEEDS:
        note += f" {n_seeds} seeds: the interval runs anti-conservative (calibrated from {MIN_CALIBRATED_SEEDS} seeds)."
    return [note]


def seed_table(
    runs: Sequence[Run], task: str, pairs: Sequence[tuple[str, str]], *, heading: str = "###"
) -> list[str]:
    """Markdown: the rows table and the comparisons ``pairs`` (row names) on ``task``, both metrics."""
    rows = group_rows(runs, task)
    if not rows:
        raise ReportError(f"no run scored task {task!r}")
    comps = [
        compare_rows(find_row(rows, a), find_row(rows, b), task, metric)
        for a, b in pairs
        for metric in METRICS
    ]
    n_seeds = max((len(r.cells) for r in rows if not r.seed_independent), default=1)  # trained rows
    out = [f"{heading} {task}: rows across seeds", "", *rows_table(rows, task), ""]
    if comps:
        out += [f"{heading} {task}: paired differences", "", *comparisons_table(comps), ""]
    return out + method_note(task, n_seeds) + [""]


def parse_pairs(spec: str | None, rows: Sequence[Row], baseline: str | None) -> list[tuple[str, str]]:
    """``"a:b,c:d"``; ``all`` = every pair of rows; None = every row vs ``baseline`` (else the first row
    whose name starts with ``base``, else the first row)."""
    names = [r.name for r in rows]
    if spec == "all":
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    if spec:
        pairs = []
        for part in spec.split(","):
            a, sep, b = part.partition(":")
            if not sep:
                raise ReportError(f"--pairs {spec!r}: expected row:row[,row:row...], got {part!r}")
            pairs.append((a.strip(), b.strip()))
        return pairs
    base = baseline or next((n for n in names if n.startswith("base")), names[0] if names else "")
    return [(n, base) for n in names if n != base]
