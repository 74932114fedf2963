"""Seed statistics: Student-t and Welch intervals hold their level at small n; Holm's adjustment; exact references."""

from __future__ import annotations

import numpy as np
import pytest

from normbench.report.stats import (
    PAIRED,
    WELCH,
    compare_seeds,
    holm_adjust,
    t_interval,
    welch_interval,
)

SIMULATIONS = 8000  # per n: the coverage estimate's standard error is sqrt(.95 * .05 / 8000) = 0.0024


def _coverage(intervals, truth: float) -> float:
    return float(np.mean([iv.low <= truth <= iv.high for iv in intervals]))


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_t_interval_covers_the_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(1000 + n)
    samples = rng.normal(loc=3.0, scale=2.0, size=(SIMULATIONS, n))
    cov = _coverage([t_interval(s) for s in samples], 3.0)
    assert 0.93 <= cov <= 0.97, cov


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_paired_comparison_covers_the_true_difference(n):
    """Seeds shared by both configurations (a per-seed effect common to both): the paired interval holds."""
    rng = np.random.default_rng(2000 + n)
    covered = 0
    for _ in range(SIMULATIONS):
        seed_effect = rng.normal(0.0, 5.0, size=n)  # large, shared: an unpaired interval would be very wide
        base = {s: 0.80 + seed_effect[s] + rng.normal(0, 0.01) for s in range(n)}
        other = {s: 0.82 + seed_effect[s] + rng.normal(0, 0.01) for s in range(n)}
        c = compare_seeds(base, other)
        assert c.method == PAIRED and c.n == n and c.df == n - 1
        covered += c.low <= 0.02 <= c.high
    assert 0.93 <= covered / SIMULATIONS <= 0.97


@pytest.mark.parametrize(("na", "nb"), [(2, 3), (3, 5), (5, 5)])
def test_welch_comparison_covers_the_true_difference_with_unequal_variances(na, nb):
    """Welch's fallback (seeds that do not pair up), 4x the baseline's spread on the other side.

    (Not tested because it does not hold: with only 2 values on the high-variance side, Welch's
    approximate df makes the interval cover about 0.89.)
    """
    rng = np.random.default_rng(3000 + 10 * na + nb)
    covered = 0
    for _ in range(SIMULATIONS):
        base = dict(enumerate(rng.normal(1.0, 0.5, size=na)))
        other = {s + 100: v for s, v in enumerate(rng.normal(1.5, 2.0, size=nb))}  # seeds that do not pair up
        c = compare_seeds(base, other)
        assert c.method == WELCH and (c.n, c.n_baseline) == (nb, na)
        covered += c.low <= 0.5 <= c.high
    assert 0.93 <= covered / SIMULATIONS <= 0.97


def test_t_interval_against_table_quantiles():
    # t_{0.975, 1} = 12.7062047, t_{0.975, 2} = 4.3026527, t_{0.95, 4} = 2.1318468 (standard tables)
    iv = t_interval([1.0, 3.0])  # mean 2, sd sqrt(2), se 1
    assert (iv.mean, iv.n, iv.df) == (2.0, 2, 1.0)
    assert iv.low == pytest.approx(2.0 - 12.7062047, abs=1e-6) and iv.high == pytest.approx(2.0 + 12.7062047, abs=1e-6)
    iv = t_interval([1.0, 2.0, 6.0])  # mean 3, sd sqrt(7), se sqrt(7/3)
    half = 4.3026527 * np.sqrt(7 / 3)
    assert (iv.low, iv.high) == pytest.approx((3.0 - half, 3.0 + half), abs=1e-6)
    x = [0.1, 0.4, 0.35, 0.2, 0.3]
    iv = t_interval(x, level=0.90)
    half = 2.1318468 * np.std(x, ddof=1) / np.sqrt(5)
    assert (iv.low, iv.high) == pytest.approx((np.mean(x) - half, np.mean(x) + half), abs=1e-7)
    assert iv.level == 0.90


def test_small_samples_have_no_interval_and_bad_levels_are_refused():
    iv = t_interval([0.7])
    assert (iv.mean, iv.low, iv.high, iv.df, iv.n) == (0.7, None, None, None, 1)
    c = compare_seeds({0: 0.5, 1: 0.6}, {0: 0.9})  # one shared seed: not enough pairs -> Welch, n_b = 1
    assert c.method == WELCH and c.low is None and c.p_value is None and c.mean == pytest.approx(0.9 - 0.55)
    assert welch_interval([1.0], [2.0, 3.0]).low is None
    with pytest.raises(ValueError, match="at least one value"):
        t_interval([])
    with pytest.raises(ValueError, match="confidence level must be in"):
        t_interval([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="at least one value on each side"):
        compare_seeds({}, {0: 1.0})


def test_compare_seeds_against_scipy():
    from scipy import stats as sps

    base = {0: 0.81, 1: 0.84, 2: 0.79, 3: 0.83}
    other = {0: 0.85, 1: 0.86, 2: 0.80}  # every seed pairs up (baseline seed 3 is left out)
    c = compare_seeds(base, other)
    ref = sps.ttest_rel([0.85, 0.86, 0.80], [0.81, 0.84, 0.79])
    assert c.method == PAIRED and (c.n, c.df) == (3, 2.0)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert (c.low, c.high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-10)

    other[7] = 0.9  # a seed the baseline lacks: Welch between all values of each
    c = compare_seeds(base, other, level=0.9)
    b, a = [0.85, 0.86, 0.80, 0.9], [0.81, 0.84, 0.79, 0.83]
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert c.method == WELCH and (c.n, c.n_baseline) == (4, 4)
    assert c.mean == pytest.approx(np.mean(b) - np.mean(a))
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-10) and c.df == pytest.approx(ref.df, rel=1e-12)
    assert (c.low, c.high) == pytest.approx(tuple(ref.confidence_interval(0.9)), rel=1e-10)
    iv = welch_interval(a, b, level=0.9)
    assert (iv.mean, iv.low, iv.high, iv.df) == pytest.approx((c.mean, c.low, c.high, c.df))


def test_zero_spread_gives_a_point_interval():
    c = compare_seeds({0: 0.5, 1: 0.25}, {0: 0.75, 1: 0.5})  # differences exactly 0.25 and 0.25
    assert c.low == c.high == c.mean and c.p_value == 0.0
    c = compare_seeds({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert c.mean == 0.0 and c.p_value == 1.0


def test_holm_adjustment_by_hand_and_none_passthrough():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx([0.03, 0.06, None, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm_adjust([None, None]) == [None, None]
    assert holm_adjust([]) == []
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        holm_adjust([1.2])
