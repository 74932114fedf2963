"""Summary statistics over seeds: mean ± sample std, and percentile-bootstrap confidence intervals.

With the few seeds a sweep runs (3-10), the bootstrap distribution of the mean can be enumerated exactly:
a resample is a multiset of the n values, and there are only C(2n-1, n) of them (92,378 for n = 10),
each with multinomial probability n! / (k_1! ... k_n! n^n). Enumerating makes the interval exact and
free of random-number noise, so a table regenerates to the same bytes. Larger samples fall back to
Monte Carlo resampling with a fixed seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

EXACT_MAX_N = 10
MC_RESAMPLES = 100_000
MC_SEED = 0


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
    """A mean difference with its bootstrap confidence interval (None bounds for n < 2)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    level: float


def _compositions(n: int):
    """All (k_1..k_n) with k_i >= 0 and sum n: the count of each value in one bootstrap resample."""
    for bars in itertools.combinations(range(2 * n - 1), n - 1):
        prev, counts = -1, []
        for b in bars:
            counts.append(b - prev - 1)
            prev = b
        counts.append(2 * n - 2 - prev)
        yield counts


def bootstrap_distribution(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The exact bootstrap distribution of the mean: (sorted resample means, their probabilities)."""
    n = len(values)
    x = np.asarray(values, dtype=np.float64)
    comps = np.array(list(_compositions(n)), dtype=np.int64)
    log_fact = np.array([math.lgamma(k + 1) for k in range(n + 1)])
    log_p = math.lgamma(n + 1) - log_fact[comps].sum(axis=1) - n * math.log(n)
    probs = np.exp(log_p)
    means = comps @ x / n
    order = np.argsort(means, kind="stable")
    return means[order], probs[order]


def _weighted_quantile(sorted_values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative probability reaches q (the inverse CDF)."""
    cdf = np.cumsum(weights) / weights.sum()
    idx = int(np.searchsorted(cdf, q - 1e-12, side="left"))
    return float(sorted_values[min(idx, len(sorted_values) - 1)])


def bootstrap_ci(values: list[float], level: float = 0.95) -> Interval:
    """Percentile-bootstrap confidence interval for the mean of `values`.

    Exact enumeration for n <= EXACT_MAX_N, else MC_RESAMPLES resamples from a generator seeded with
    MC_SEED; either way deterministic.

    Args:
        values: the sample (e.g. paired per-seed differences).
        level: the coverage, in (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    n = len(values)
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    mean = float(np.mean(values))
    if n < 2:
        return Interval(mean, None, None, n, level)
    alpha = (1 - level) / 2
    if n <= EXACT_MAX_N:
        means, probs = bootstrap_distribution(values)
    else:
        rng = np.random.default_rng(MC_SEED)
        idx = rng.integers(0, n, size=(MC_RESAMPLES, n))
        means = np.sort(np.asarray(values, dtype=np.float64)[idx].mean(axis=1))
        probs = np.full(len(means), 1.0 / len(means))
    return Interval(mean, _weighted_quantile(means, probs, alpha), _weighted_quantile(means, probs, 1 - alpha),
                    n, level)
