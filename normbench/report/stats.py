"""Summary statistics over seeds: mean ± sample std, Student-t intervals and a multiple-comparison guard.

A sweep repeats each configuration over a few seeds (3-10). Intervals must hold their level at that n, so
they are Student-t intervals: for one sample (or paired per-seed differences) the classical interval with
n - 1 degrees of freedom, and for two unpaired samples Welch's interval with the Welch-Satterthwaite
degrees of freedom. (A percentile bootstrap over 2-5 seeds covers the mean only 51-85% of the time at a
nominal 95%: with two seeds its interval is [min, max].) With n < 2 there is no interval. Welch's df is an
approximation: when the side with the larger spread has only 2 values its interval covers less than the
level (about 89% at a nominal 95% in tests/test_stats.py's setting); paired seeds avoid that.

A table with many difference cells tests many hypotheses; `holm_adjust` gives Holm-Bonferroni adjusted
p-values, which control the family-wise error rate over all of them.

Everything is deterministic (closed forms; Student-t quantiles and tail probabilities from scipy).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PAIRED = "paired-t"
WELCH = "welch"


@dataclass(frozen=True)
class SeedStats:
    """Mean and sample standard deviation (ddof=1; None for n < 2) of n values."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> SeedStats:
        n = len(values)
        if n == 0:
            return cls(None, None, 0)
        arr = np.asarray(values, dtype=np.float64)
        return cls(float(arr.mean()), float(arr.std(ddof=1)) if n >= 2 else None, n)


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference of means) with its confidence interval.

    Attributes:
        mean: the estimate.
        low, high: the interval bounds; None when it cannot be computed (n < 2).
        n: the sample size (for `welch_interval`: the size of the second sample, b).
        level: the confidence level.
        df: the Student-t degrees of freedom (None without an interval).
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    level: float
    df: float | None = None


@dataclass(frozen=True)
class Comparison:
    """`other` minus `baseline` over seeds (see `compare_seeds`).

    Attributes:
        mean: mean paired difference (paired-t) or difference of the means (welch).
        low, high: the confidence interval; None when it cannot be computed.
        n: pairs (paired-t) or seeds of `other` (welch).
        method: 'paired-t' or 'welch'.
        p_value: two-sided p-value of "no difference"; None when it cannot be computed.
        df: Student-t degrees of freedom (None without an interval).
        n_baseline: seeds of the baseline that entered (paired-t: the pairs; welch: all of them).
        level: the confidence level.
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str
    p_value: float | None
    df: float | None
    n_baseline: int
    level: float


def _check_level(level: float) -> float:
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return level


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def t_two_sided_p(t_stat: float, df: float) -> float:
    """P(|T| >= |t_stat|) for Student's t with `df` degrees of freedom."""
    from scipy.stats import t

    return float(min(1.0, 2.0 * t.sf(abs(t_stat), df)))


def _t_test(mean: float, se: float, df: float, level: float) -> tuple[float, float, float]:
    """(low, high, two-sided p) of a t statistic mean / se; a zero standard error gives a point interval."""
    if se == 0.0:  # every value equal: the interval collapses; "no difference" is certain or impossible
        return mean, mean, 1.0 if mean == 0.0 else 0.0
    half = t_quantile(0.5 + level / 2, df) * se
    return mean - half, mean + half, t_two_sided_p(mean / se, df)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """One-sample Student-t confidence interval of the mean (n - 1 degrees of freedom).

    Args:
        values: the sample (e.g. paired per-seed differences); at least one value.
        level: the coverage, in (0, 1).

    Returns:
        The interval; with n < 2 its bounds (and df) are None.
    """
    level = _check_level(level)
    x = np.asarray(list(values), dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, None, None, n, level)
    low, high, _ = _t_test(mean, float(x.std(ddof=1)) / math.sqrt(n), n - 1, level)
    return Interval(mean, low, high, n, level, float(n - 1))


def _welch(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, float | None, float | None, float | None,
                                                               float | None]:
    """(mean(b) - mean(a), low, high, p, df) by Welch's unequal-variance t."""
    mean = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return mean, None, None, None, None
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    se2 = va + vb
    if se2 == 0.0:
        return mean, mean, mean, 1.0 if mean == 0.0 else 0.0, None
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    low, high, p = _t_test(mean, math.sqrt(se2), df, level)
    return mean, low, high, p, df


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Welch's confidence interval of mean(b) - mean(a) (unequal variances, Welch-Satterthwaite df).

    Args:
        a: the first sample (e.g. the baseline's per-seed values); at least one value.
        b: the second sample; at least one value.
        level: the coverage, in (0, 1).

    Returns:
        The interval (`n` = len(b)); bounds and df are None unless both samples have >= 2 values.
    """
    level = _check_level(level)
    xa, xb = np.asarray(list(a), dtype=np.float64), np.asarray(list(b), dtype=np.float64)
    if len(xa) == 0 or len(xb) == 0:
        raise ValueError("welch_interval needs at least one value in each sample")
    mean, low, high, _, df = _welch(xa, xb, level)
    return Interval(mean, low, high, len(xb), level, df)


def compare_seeds(baseline: Mapping[int, float], other: Mapping[int, float], level: float = 0.95) -> Comparison:
    """`other` minus `baseline`, both given per seed: paired when the seeds match, else Welch.

    Paired Student-t on the per-seed differences (n - 1 df) when every seed of `other` has a baseline value
    and there are at least 2 such pairs (seeds that only the baseline has are left out); otherwise Welch's
    unpaired interval between all values of each.

    Args:
        baseline: {seed: value} of the reference configuration; at least one.
        other: {seed: value} of the compared configuration; at least one.
        level: the confidence level, in (0, 1).
    """
    level = _check_level(level)
    if not baseline or not other:
        raise ValueError("compare_seeds needs at least one value on each side")
    shared = [s for s in other if s in baseline]
    if len(shared) >= 2 and len(shared) == len(other):
        d = np.asarray([other[s] - baseline[s] for s in sorted(shared)], dtype=np.float64)
        n = len(d)
        mean = float(d.mean())
        low, high, p = _t_test(mean, float(d.std(ddof=1)) / math.sqrt(n), n - 1, level)
        return Comparison(mean, low, high, n, PAIRED, p, float(n - 1), n, level)
    a = np.asarray([baseline[s] for s in sorted(baseline)], dtype=np.float64)
    b = np.asarray([other[s] for s in sorted(other)], dtype=np.float64)
    w_mean, w_low, w_high, w_p, w_df = _welch(a, b, level)
    return Comparison(w_mean, w_low, w_high, len(b), WELCH, w_p, w_df, len(a), level)


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order (None passed through).

    The m p-values (Nones not counted) are sorted, the i-th smallest (i from 0) multiplied by m - i, made
    non-decreasing by a running maximum and capped at 1. Rejecting where the adjusted value is <= alpha
    controls the family-wise error rate at alpha.
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    for p, _ in present:
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"p-values must be in [0, 1], got {p}")
    m = len(present)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
