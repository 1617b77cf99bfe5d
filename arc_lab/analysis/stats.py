"""Paired significance tests for comparing two runs evaluated on the same items.

Two runs scored on the same multiple-choice items give *paired* 0/1 outcomes (``acc`` or ``acc_norm``
per item). Their accuracies are correlated (easy items are easy for both), so the right tests look
only at the items where the runs differ:

- :func:`mcnemar_exact` — McNemar's exact test: under H0 "both runs are equally good", each discordant
  item is equally likely to favour either run, so ``b ~ Bin(b + c, 1/2)``.
- :func:`paired_bootstrap` — a percentile confidence interval for the difference in mean accuracy,
  resampling items (both runs' outcomes of an item move together).
- :func:`pair_samples` — lines two runs' per-item sample records up by ``doc_id`` and refuses to pair
  items whose prompts differ (a different ``context_hash`` means a different item was scored).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binom


class PairingError(ValueError):
    """Two runs' samples cannot be paired item by item (the message names the task and doc_id)."""


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test on paired 0/1 outcomes ``x`` (run) and ``y`` (baseline).

    Attributes:
        b: items where ``x`` is right and ``y`` is wrong (the run's wins).
        c: items where ``x`` is wrong and ``y`` is right (the run's losses).
        p: two-sided exact p-value, ``min(1, 2·P(X ≤ min(b, c)))`` with ``X ~ Bin(b + c, 1/2)``.
    """

    b: int
    c: int
    p: float


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``mean(x) - mean(y)``.

    Attributes:
        diff: the observed difference ``mean(x) - mean(y)``.
        low: lower end of the percentile confidence interval.
        high: upper end of the percentile confidence interval.
        confidence: the interval's nominal coverage, e.g. 0.95.
        n_resamples: number of bootstrap resamples drawn.
    """

    diff: float
    low: float
    high: float
    confidence: float
    n_resamples: int


@dataclass(frozen=True)
class PairedSamples:
    """Two runs' sample records matched by ``doc_id`` (on the intersection of their doc_id sets).

    Attributes:
        task: task name, for messages.
        doc_ids: the paired doc_ids, sorted.
        a: run A's records, in ``doc_ids`` order.
        b: run B's records, in ``doc_ids`` order.
        only_a: doc_ids present only in run A (dropped from the comparison), sorted.
        only_b: doc_ids present only in run B (dropped from the comparison), sorted.
    """

    task: str
    doc_ids: list[Any]
    a: list[Mapping[str, Any]]
    b: list[Mapping[str, Any]]
    only_a: list[Any] = field(default_factory=list)
    only_b: list[Any] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when both runs scored exactly the same set of doc_ids."""
        return not self.only_a and not self.only_b

    def outcomes(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """The paired 0/1 outcomes of ``metric`` (e.g. ``"acc"``), each of shape (N,)."""
        return (
            _column(self.a, metric, self.task, "A"),
            _column(self.b, metric, self.task, "B"),
        )


def _as_binary(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isin(arr, (0.0, 1.0)).all():
        bad = arr[~np.isin(arr, (0.0, 1.0))][:5]
        raise ValueError(f"{name} must hold 0/1 outcomes, found {bad.tolist()}")
    return arr


def _check_same_length(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape:
        raise ValueError(f"paired outcomes differ in length: {x.shape[0]} vs {y.shape[0]}")


def mcnemar_exact(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> McNemarResult:
    """McNemar's exact (binomial) test of paired 0/1 outcomes.

    Args:
        x: outcomes of run X per item, shape (N,), values 0/1.
        y: outcomes of run Y on the same items in the same order, shape (N,), values 0/1.

    Returns:
        ``b`` = #(x=1, y=0), ``c`` = #(x=0, y=1) and the two-sided p-value
        ``min(1, 2·P(X ≤ min(b, c)))``, ``X ~ Bin(b + c, 1/2)``; ``p = 1`` when ``b + c = 0``.

    Raises:
        ValueError: if the inputs are not 1-D 0/1 arrays of equal length.
    """
    xa, ya = _as_binary(x, "x"), _as_binary(y, "y")
    _check_same_length(xa, ya)
    b = int(np.sum((xa == 1) & (ya == 0)))
    c = int(np.sum((xa == 0) & (ya == 1)))
    return McNemarResult(b=b, c=c, p=mcnemar_p(b, c))


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``.

    Args:
        b: discordant pairs favouring one run (>= 0).
        c: discordant pairs favouring the other run (>= 0).

    Returns:
        ``min(1, 2·P(X ≤ min(b, c)))`` with ``X ~ Bin(b + c, 1/2)``; 1.0 when ``b + c = 0``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


def paired_bootstrap(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Percentile bootstrap CI of ``mean(x) - mean(y)``, resampling items with replacement.

    Resampling N items with replacement and averaging the per-item differences ``d = x - y`` is the
    same as drawing multinomial counts over the distinct values of ``d`` (for 0/1 outcomes: -1, 0, 1),
    so the resamples are drawn that way: identical in distribution to index resampling, but
    O(n_resamples · #distinct) instead of O(n_resamples · N).

    Args:
        x: per-item outcomes of run X, shape (N,).
        y: per-item outcomes of run Y on the same items, shape (N,).
        n_resamples: number of bootstrap resamples (10,000 gives a CI stable to ~±0.002 here).
        seed: seed of the ``numpy.random.Generator``; the same seed gives the same interval.
        confidence: nominal coverage of the two-sided percentile interval, in (0, 1).

    Returns:
        The observed difference and its percentile interval.

    Raises:
        ValueError: on empty or unequal-length inputs, or bad ``n_resamples``/``confidence``.
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _check_same_length(xa, ya)
    n = xa.shape[0]
    if n == 0:
        raise ValueError("paired_bootstrap needs at least one paired item, got 0")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values, counts = np.unique(xa - ya, return_counts=True)  # distinct per-item differences
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=n_resamples)  # (n_resamples, #distinct)
    means = draws @ values / n  # (n_resamples,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return BootstrapResult(
        diff=float(xa.mean() - ya.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=n_resamples,
    )


def _index_by_doc_id(records: Iterable[Mapping[str, Any]], task: str, side: str) -> dict[Any, Mapping]:
    index: dict[Any, Mapping] = {}
    for i, rec in enumerate(records):
        for key in ("doc_id", "context_hash"):
            if key not in rec:
                raise PairingError(f"task {task!r}, run {side}: sample record #{i} has no {key!r} field")
        doc_id = rec["doc_id"]
        if doc_id in index:
            raise PairingError(f"task {task!r}, run {side}: doc_id {doc_id!r} appears more than once")
        index[doc_id] = rec
    return index


def _check_same_item(ra: Mapping[str, Any], rb: Mapping[str, Any], task: str, doc_id: Any) -> None:
    if ra["context_hash"] != rb["context_hash"]:
        raise PairingError(
            f"task {task!r}, doc_id {doc_id!r}: context_hash differs between the runs "
            f"({ra['context_hash']!r} vs {rb['context_hash']!r}); they were not evaluated on the same "
            "items (different dataset version, few-shot setting or prompt), so they cannot be paired"
        )
    if "target" in ra and "target" in rb and ra["target"] != rb["target"]:
        raise PairingError(
            f"task {task!r}, doc_id {doc_id!r}: gold target differs between the runs "
            f"({ra['target']!r} vs {rb['target']!r}); they were not evaluated on the same items"
        )


def pair_samples(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]], task: str) -> PairedSamples:
    """Pair two runs' per-item sample records by ``doc_id``.

    Items are compared on the intersection of the two doc_id sets; the doc_ids left out are returned
    in ``only_a``/``only_b`` so the caller can say so (see :attr:`PairedSamples.complete`).

    Args:
        a: run A's sample records (dicts with at least ``doc_id`` and ``context_hash``).
        b: run B's sample records.
        task: task name, used in error messages.

    Returns:
        The paired records, sorted by doc_id.

    Raises:
        PairingError: if a record lacks ``doc_id``/``context_hash``, a doc_id repeats within a run, the
            same doc_id has a different ``context_hash`` (or gold ``target``) in the two runs, or the
            runs share no doc_id at all.
    """
    ia, ib = _index_by_doc_id(a, task, "A"), _index_by_doc_id(b, task, "B")
    common = sorted(ia.keys() & ib.keys(), key=_sort_key)
    if not common:
        raise PairingError(
            f"task {task!r}: the two runs share no doc_id ({len(ia)} vs {len(ib)} items); nothing to pair"
        )
    for doc_id in common:
        _check_same_item(ia[doc_id], ib[doc_id], task, doc_id)
    return PairedSamples(
        task=task,
        doc_ids=common,
        a=[ia[d] for d in common],
        b=[ib[d] for d in common],
        only_a=sorted(ia.keys() - ib.keys(), key=_sort_key),
        only_b=sorted(ib.keys() - ia.keys(), key=_sort_key),
    )


def _sort_key(doc_id: Any) -> tuple[int, Any]:
    # doc_ids are ints from the evaluator; sort ints numerically and anything else as text.
    return (0, doc_id) if isinstance(doc_id, int) else (1, str(doc_id))


def _column(records: Sequence[Mapping[str, Any]], metric: str, task: str, side: str) -> np.ndarray:
    try:
        return np.asarray([rec[metric] for rec in records], dtype=float)
    except KeyError:
        raise PairingError(f"task {task!r}, run {side}: a sample record has no {metric!r} field") from None


@dataclass(frozen=True)
class PairedComparison:
    """Run X vs run Y on one metric over the paired items.

    Attributes:
        metric: the per-item outcome compared, e.g. ``"acc"``.
        x_mean: X's mean over the paired items.
        y_mean: Y's mean over the paired items.
        boot: paired bootstrap of ``x_mean - y_mean``.
        mcnemar: McNemar's exact test (``b`` = items only X gets right).
        n: number of paired items.
    """

    metric: str
    x_mean: float
    y_mean: float
    boot: BootstrapResult
    mcnemar: McNemarResult
    n: int


def compare_paired(
    paired: PairedSamples, metrics: Sequence[str], *, n_resamples: int = 10_000, seed: int = 0
) -> dict[str, PairedComparison]:
    """Difference, bootstrap CI and McNemar test of A (as X) vs B (as Y) for each metric.

    Args:
        paired: the two runs' records from :func:`pair_samples`.
        metrics: per-item 0/1 fields to compare, e.g. ``("acc", "acc_norm")``.
        n_resamples: bootstrap resamples per metric.
        seed: bootstrap seed (each metric uses the same seed).

    Returns:
        ``{metric: PairedComparison}``.
    """
    out = {}
    for metric in metrics:
        x, y = paired.outcomes(metric)
        boot = paired_bootstrap(x, y, n_resamples=n_resamples, seed=seed)
        out[metric] = PairedComparison(
            metric, float(x.mean()), float(y.mean()), boot, mcnemar_exact(x, y), len(x)
        )
    return out


def disagree(d_first: float, d_second: float) -> bool:
    """True when two metrics' differences favour different runs (opposite signs; a tie is not flagged)."""
    return d_first * d_second < 0


def clustered_stderr(values: Sequence[float] | np.ndarray, clusters: Sequence[Any]) -> float:
    """Cluster-robust standard error of a mean, for items that come in correlated groups.

    The questions about one entity of the built-in set (or any items sharing a source) are not
    independent, so the i.i.d. standard error overstates the precision. With ``n`` items, ``G`` clusters
    and mean ``m``::

        SE = sqrt(G / (G - 1) * sum_g (sum_{i in g} (x_i - m))^2) / n

    (the CR1 sandwich estimator of a mean). With one item per cluster it equals the i.i.d. ``std / sqrt(n)``
    with ``ddof=1`` that lm-eval reports.

    Args:
        values: per-item outcomes, shape (N,).
        clusters: per-item cluster keys, length N (any hashable).

    Returns:
        The standard error; NaN when there are fewer than 2 clusters.

    Raises:
        ValueError: if ``values`` and ``clusters`` differ in length.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(clusters) != x.shape[0]:
        raise ValueError(f"clustered_stderr: {x.shape} values vs {len(clusters)} cluster keys")
    keys = list(dict.fromkeys(clusters))
    g = len(keys)
    if g < 2:
        return float("nan")
    index = {k: j for j, k in enumerate(keys)}
    sums = np.zeros(g)
    np.add.at(sums, [index[c] for c in clusters], x - x.mean())  # (G,) per-cluster residual sums
    return float(np.sqrt(g / (g - 1) * np.sum(sums**2)) / x.shape[0])


# --------------------------------------------------------------------------------- seeds and items
#: Fewest seeds at which :func:`seed_item_diff` keeps its false-positive rate near nominal (simulated).
MIN_CALIBRATED_SEEDS = 3


@dataclass(frozen=True)
class SeedAwareDiff:
    """Row A minus row B over seeds and items (:func:`seed_item_diff`).

    Attributes:
        diff: the mean over seeds of each seed's paired difference in mean accuracy.
        low: lower end of the confidence interval.
        high: upper end of the confidence interval.
        se: its standard error, ``sqrt(se_seed**2 + se_item**2)``.
        se_seed: the seed part, ``sd(per_seed) / sqrt(S)``; None with one seed (not measured).
        se_item: the item part: the (cluster-robust) standard error of the per-item differences averaged
            over seeds.
        df: Welch–Satterthwaite degrees of freedom of ``se``.
        per_seed: each seed's paired difference, in the order given.
        confidence: the nominal coverage, e.g. 0.95.
    """

    diff: float
    low: float
    high: float
    se: float
    se_seed: float | None
    se_item: float
    df: float
    per_seed: tuple[float, ...]
    confidence: float

    @property
    def n_seeds(self) -> int:
        """How many seeds the difference is averaged over."""
        return len(self.per_seed)

    @property
    def within_noise(self) -> bool:
        """True when the interval includes 0: the difference is not told apart from the noise it measures
        (seed and item noise with two or more seeds, item noise alone with one)."""
        return self.low <= 0.0 <= self.high


def _cluster_index(clusters: Sequence[Any] | None, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise ValueError(f"seed_item_diff: {n} items vs {len(clusters)} cluster keys")
    keys = {k: j for j, k in enumerate(dict.fromkeys(clusters))}
    return np.array([keys[c] for c in clusters]), len(keys)


def seed_item_diff(
    x: Sequence[Sequence[float]] | np.ndarray,
    y: Sequence[Sequence[float]] | np.ndarray,
    clusters: Sequence[Any] | None = None,
    confidence: float = 0.95,
) -> SeedAwareDiff:
    """Difference in mean accuracy of two rows trained at the same seeds and scored on the same items,
    with an interval that carries both seed noise and item noise.

    ``x[s, i]`` and ``y[s, i]`` are the 0/1 outcomes of rows A and B at seed ``s`` on item ``i`` (a row
    that does not depend on the seed, such as the untrained base model, repeats its one outcome vector).
    With ``D = x - y``, ``d_s = mean_i D[s, i]`` (seed ``s``'s paired difference) and
    ``e_i = mean_s D[s, i]`` (item ``i``'s difference averaged over seeds), the estimate is
    ``diff = mean_s d_s`` and its variance is the sum of two components::

        V_seed = var_s(d_s) / S                  (ddof 1; 0 and "not measured" when S = 1)
        V_item = CR1 clustered variance of mean_i(e_i)   (i.i.d. items when ``clusters`` is None)
        CI     = diff ± t_{df, 1-α/2} · sqrt(V_seed + V_item)
        df     = (V_seed + V_item)² / (V_seed² / (S - 1) + V_item² / (G - 1))   (Welch–Satterthwaite)

    This is the variance of a grand mean in a seeds × items crossed random-effects design
    (``σ²_seed/S + σ²_item/n + σ²_resid/(S·n)``) estimated from the two ANOVA mean squares without
    subtracting the residual one, so it counts ``σ²_resid/(S·n)`` twice: slightly conservative, never
    negative. Seeds and items are the two sources of noise a rerun with another seed, or another draw of
    test questions, would show; see Bouthillier et al., "Accounting for Variance in Machine Learning
    Benchmarks" (MLSys 2021) for why seed noise must be in the interval, and Cameron & Miller, "A
    Practitioner's Guide to Cluster-Robust Inference" (J. Human Resources 2015) for CR1.

    Calibration (``tests/test_seed_stats.py``: simulated studies of 96 items in 48 clusters with a seed
    effect of 0.5 logits and no true difference): the interval excludes 0 in about 6% of studies at S = 3
    and 4% at S = 5, but in 10-12% at S = 2, where the seed variance has one degree of freedom and
    Welch–Satterthwaite over-trusts it (:data:`MIN_CALIBRATED_SEEDS`; the report says so). With S = 1
    seed noise is not measured at all and a null difference between two trained rows is "found" in about
    30% of such studies: one seed cannot tell a real difference from seed noise. A two-level percentile
    bootstrap (seeds, then clusters) was the other candidate; with 3 seeds its percentiles are little more
    than the range of the three seed differences, with no small-sample correction, so the t interval was
    kept.

    Args:
        x: row A's outcomes, shape (S, n).
        y: row B's outcomes, shape (S, n), the same seeds in the same order and the same items.
        clusters: per-item cluster keys (the entity of a built-in question), length n; None = i.i.d. items.
        confidence: nominal coverage of the interval.

    Raises:
        ValueError: on shapes that differ, no seed, no item, or fewer than 2 clusters.
    """
    from scipy.stats import t as student_t

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(
            f"seed_item_diff: expected two (seeds, items) arrays of one shape, got {a.shape}, {b.shape}"
        )
    d = a - b
    s, n = d.shape
    per_seed = d.mean(axis=1)
    diff = float(per_seed.mean())
    index, g = _cluster_index(clusters, n)
    if g < 2:
        raise ValueError("seed_item_diff: needs at least 2 items (or clusters)")
    e = d.mean(axis=0)
    sums = np.zeros(g)
    np.add.at(sums, index, e - e.mean())
    v_item = float(g / (g - 1) * np.sum(sums**2) / n**2)
    v_seed = float(per_seed.var(ddof=1) / s) if s > 1 else 0.0
    v = v_seed + v_item
    denom = (v_seed**2 / (s - 1) if s > 1 else 0.0) + v_item**2 / (g - 1)
    df = v**2 / denom if denom > 0 else float("inf")
    half = float(student_t.ppf(0.5 + confidence / 2, df) * np.sqrt(v)) if v > 0 else 0.0
    return SeedAwareDiff(
        diff=diff,
        low=diff - half,
        high=diff + half,
        se=float(np.sqrt(v)),
        se_seed=float(np.sqrt(v_seed)) if s > 1 else None,
        se_item=float(np.sqrt(v_item)),
        df=float(df),
        per_seed=tuple(float(v) for v in per_seed),
        confidence=confidence,
    )


def simulate_rows(
    rng: np.random.Generator,
    *,
    seeds: int = 3,
    clusters: int = 48,
    per_cluster: int = 2,
    seed_sd: float = 0.5,
    interaction_sd: float = 1.0,
    shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One simulated study of two rows (for calibrating :func:`seed_item_diff`): 0/1 outcomes
    ``(seeds, items)`` for rows A and B and the items' cluster keys.

    An item's log-odds of being answered right is its difficulty (cluster effect + item effect, drawn
    afresh per study: a new draw of test questions), plus a per-(row, seed) shift of sd ``seed_sd`` (a seed
    moves a whole row: 0.5 logits moves a row near 50% by about 12 points, the size seen between seeds of
    the built-in study), plus a shift shared by both rows at a seed, plus a per-(row, seed, item) term of
    sd ``interaction_sd`` (another seed flips other items), plus ``shift`` for row A only (0 = no true
    difference).
    """
    n = clusters * per_cluster
    cluster = np.repeat(np.arange(clusters), per_cluster)
    difficulty = rng.normal(0.0, 1.0, clusters)[cluster] + rng.normal(0.0, 1.0, n)
    shared = rng.normal(0.0, seed_sd, (seeds, 1))

    def row(extra: float) -> np.ndarray:
        logit = difficulty + shared + rng.normal(0.0, seed_sd, (seeds, 1)) + extra
        logit = logit + rng.normal(0.0, interaction_sd, (seeds, n))
        return (rng.random((seeds, n)) < 1.0 / (1.0 + np.exp(-logit))).astype(float)

    return row(shift), row(0.0), cluster.tolist()
