"""Paired significance tests: hand-computed McNemar p-values, bootstrap CIs, pairing by doc_id."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arc_lab.analysis.stats import PairingError, mcnemar_exact, mcnemar_p, pair_samples, paired_bootstrap


def _outcomes(both: int, only_x: int, only_y: int, neither: int) -> tuple[list[int], list[int]]:
    """Paired 0/1 outcomes with the given cell counts of the 2x2 table."""
    x = [1] * both + [1] * only_x + [0] * only_y + [0] * neither
    y = [1] * both + [0] * only_x + [1] * only_y + [0] * neither
    return x, y


# --- McNemar -----------------------------------------------------------------------------------------


def test_mcnemar_b1_c6_is_0_125() -> None:
    # X ~ Bin(7, 1/2): P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = 8/128; two-sided p = 2·8/128 = 0.125.
    x, y = _outcomes(both=5, only_x=1, only_y=6, neither=3)
    res = mcnemar_exact(x, y)
    assert (res.b, res.c) == (1, 6)
    assert res.p == pytest.approx(2 * (1 + 7) / 128, abs=1e-12)


def test_mcnemar_is_symmetric_in_b_and_c() -> None:
    x, y = _outcomes(both=2, only_x=6, only_y=1, neither=0)
    res = mcnemar_exact(x, y)
    assert (res.b, res.c) == (6, 1)
    assert res.p == pytest.approx(0.125, abs=1e-12)


def test_mcnemar_equal_discordant_counts_gives_p_1() -> None:
    x, y = _outcomes(both=3, only_x=4, only_y=4, neither=2)
    res = mcnemar_exact(x, y)
    assert (res.b, res.c, res.p) == (4, 4, 1.0)


def test_mcnemar_no_discordant_pairs_gives_p_1() -> None:
    x, y = _outcomes(both=5, only_x=0, only_y=0, neither=5)
    assert mcnemar_exact(x, y) == mcnemar_exact(y, x)
    assert mcnemar_exact(x, y).p == 1.0
    assert mcnemar_p(0, 0) == 1.0


def test_mcnemar_p_matches_exact_sum() -> None:
    # b=3, c=12: p = 2 · Σ_{k<=3} C(15,k) / 2^15 = 2·(1+15+105+455)/32768
    expected = 2 * sum(math.comb(15, k) for k in range(4)) / 2**15
    assert mcnemar_p(3, 12) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_p(0, 1) == 1.0  # 2·P(X<=0 | n=1) = 1


def test_mcnemar_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="length"):
        mcnemar_exact([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_p(-1, 2)


# --- paired bootstrap --------------------------------------------------------------------------------


def test_bootstrap_ci_contains_true_difference() -> None:
    # 400 items; X right on 60% of them, Y on 50%: the true (and observed) difference is 0.10.
    x, y = _outcomes(both=140, only_x=100, only_y=60, neither=100)
    res = paired_bootstrap(x, y, n_resamples=5000, seed=1)
    assert res.diff == pytest.approx(0.10, abs=1e-12)
    assert res.low < 0.10 < res.high
    # normal approximation of the paired difference's SE: sqrt((b + c)/n - d^2) / sqrt(n) ≈ 0.0307
    se = math.sqrt((160 / 400 - 0.01) / 400)
    assert res.high - res.low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    first = paired_bootstrap(x, y, seed=7)
    assert paired_bootstrap(x, y, seed=7) == first
    assert paired_bootstrap(x, y, seed=8) != first
    assert first.n_resamples == 10_000 and first.confidence == 0.95


def test_bootstrap_of_identical_runs_is_a_point() -> None:
    x = [1, 0, 1, 1, 0]
    res = paired_bootstrap(x, x, n_resamples=100)
    assert (res.diff, res.low, res.high) == (0.0, 0.0, 0.0)


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap([1], [1, 0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1], [0], confidence=1.0)


# --- pairing -----------------------------------------------------------------------------------------


def _rec(doc_id: int, acc: int, ctx: str | None = None, target: int = 0) -> dict:
    return {
        "doc_id": doc_id,
        "acc": acc,
        "acc_norm": acc,
        "target": target,
        "context_hash": ctx or f"h{doc_id}",
    }


def test_pair_samples_matches_by_doc_id_regardless_of_order() -> None:
    a = [_rec(2, 1), _rec(0, 0), _rec(1, 1)]
    b = [_rec(1, 0), _rec(2, 1), _rec(0, 1)]
    paired = pair_samples(a, b, "arc_challenge")
    assert paired.doc_ids == [0, 1, 2] and paired.complete
    xa, xb = paired.outcomes("acc")
    np.testing.assert_array_equal(xa, [0, 1, 1])
    np.testing.assert_array_equal(xb, [1, 0, 1])


def test_pair_samples_uses_intersection_and_reports_the_rest() -> None:
    a = [_rec(i, 1) for i in range(5)]
    b = [_rec(i, 0) for i in range(2, 7)]
    paired = pair_samples(a, b, "sciq")
    assert paired.doc_ids == [2, 3, 4]
    assert (paired.only_a, paired.only_b) == ([0, 1], [5, 6])
    assert not paired.complete


def test_pair_samples_refuses_different_contexts() -> None:
    a = [_rec(0, 1), _rec(1, 1)]
    b = [_rec(0, 1), _rec(1, 1, ctx="other")]
    with pytest.raises(PairingError, match=r"task 'arc_easy', doc_id 1: context_hash differs"):
        pair_samples(a, b, "arc_easy")


def test_pair_samples_refuses_different_targets() -> None:
    with pytest.raises(PairingError, match="doc_id 0: gold target differs"):
        pair_samples([_rec(0, 1, target=0)], [_rec(0, 1, target=2)], "obqa")


def test_pair_samples_refuses_duplicates_missing_fields_and_disjoint_runs() -> None:
    with pytest.raises(PairingError, match="doc_id 0 appears more than once"):
        pair_samples([_rec(0, 1), _rec(0, 1)], [_rec(0, 1)], "t")
    with pytest.raises(PairingError, match="no 'context_hash' field"):
        pair_samples([{"doc_id": 0, "acc": 1}], [_rec(0, 1)], "t")
    with pytest.raises(PairingError, match="share no doc_id"):
        pair_samples([_rec(0, 1)], [_rec(1, 1)], "t")
    with pytest.raises(PairingError, match="no 'acc_norm' field"):
        pair_samples([{"doc_id": 0, "context_hash": "h"}], [_rec(0, 1, ctx="h")], "t").outcomes("acc_norm")


def test_clustered_stderr_reduces_to_iid_with_singleton_clusters_and_grows_with_duplicates():
    from arc_lab.analysis.stats import clustered_stderr
    from arc_lab.eval.metrics import mean_stderr

    x = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
    # singleton clusters: CR1 with G = n is exactly the ddof=1 i.i.d. formula (algebra, so 1e-12 is
    # float64 rounding on ten terms)
    assert clustered_stderr(x, list(range(10))) == pytest.approx(mean_stderr(x), abs=1e-12)
    # every item duplicated inside its own cluster: cluster sums double and n doubles, so the SE is
    # exactly that of the 10 originals (duplicates add no information), larger than the naive i.i.d. SE
    doubled, keys = [v for v in x for _ in range(2)], [k for k in range(10) for _ in range(2)]
    assert clustered_stderr(doubled, keys) == pytest.approx(mean_stderr(x), abs=1e-12)
    assert clustered_stderr(doubled, keys) > mean_stderr(doubled)
    assert math.isnan(clustered_stderr([1, 0], ["a", "a"]))
    with pytest.raises(ValueError):
        clustered_stderr([1, 0], ["a"])
