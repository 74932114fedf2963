"""Family-wise error control over a study's claims: one p-value per tested claim, Holm over all of them.

A study declares several claims; reporting each at its own 5% level lets one of five false claims through
by chance far more often than 5% of the time. Every claim that is a statistical test gets a p-value, and
Holm's step-down adjustment (normbench.report.stats.holm_adjust) over the study's m tested claims controls
the probability of calling any false claim held at the study's `alpha` (0.05 unless the study declares one).

The p-value of each tested kind (d = per-seed difference a - b: paired Student-t when the seeds pair up,
else Welch, exactly as the claim's interval; se its standard error, T Student's t with the same df):

    difference greater       H0: d <= +margin      p = P(T >= (mean - margin) / se)
    difference less          H0: d >= -margin      p = P(T <= (mean + margin) / se)
    difference not_less      H0: d <= -margin      p = P(T >= (mean + margin) / se)
    difference not_greater   H0: d >= +margin      p = P(T <= (mean - margin) / se)
    difference equivalent    TOST: p = max of the two one-sided ps against -margin and +margin
    mean_within (interval)   TOST-style against the bounds: p = max(P(T >= (mean - low) / se),
                             P(T <= (mean - high) / se)), one-sample t with n - 1 df
    correlation              permutation test of Spearman's rho over the configurations (H0: no
                             association; one-sided, rho > 0; 20,000 seeded permutations, p = (1 + k) / (1 + N))
    extreme                  intersection-union test: p_j = one-sided t (paired or Welch) of "select's mean is
                             above (max) / below (min) configuration j's" for each of the k - 1 others;
                             p = max_j p_j (the claim needs every comparison)
    rank (at_most r)         select must be below at least k - r of the k - 1 others: p = min(1, r x the
                             (k - r)-th smallest p_j), p_j one-sided t of "select below j". Valid: under H0 at
                             least r others are not above select, so k - r rejections need t - r + 1 of the
                             t >= r true nulls at level alpha / r, probability <= t alpha / (r (t - r + 1))
                             <= alpha (Markov's inequality). For r = 1 it is the intersection-union test.

A tested claim holds when its pre-declared test passes (its interval, as declared, beyond the margin; for a
correlation rho >= min) AND its Holm-adjusted p is <= alpha: family-wise control only ever adds a condition,
it never loosens a declared test.

Descriptive kinds get no test and are excluded from the family and from the count of held claims:
range_less, argmin_between and argmin_ratio compare ranges or locations of minima of means over seeds, for
which no sound test at 5 seeds is declared; mean_within with `require: mean` checks the mean alone; frequency counts
(run, epoch) pairs, which are neither independent (epochs of one run) nor compared with a declared null rate.
Their verdicts are shown as observations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_ALPHA = 0.05
PERMUTATIONS = 20_000
PERMUTATION_SEED = 0
DESCRIPTIVE = "descriptive"
TESTED = "test"
_DESCRIPTIVE_WHY = {
    "range_less": "descriptive (no test): compares ranges of means",
    "argmin_between": "descriptive (no test): the location of a minimum of means",
    "argmin_ratio": "descriptive (no test): a ratio of the locations of minima of means",
    "rank": "descriptive (no test): at most r of k configurations always rank at most r",
    "frequency": "descriptive (no test): a count of (run, epoch) pairs, not independent, no null rate declared",
    "mean_within": "descriptive (no test): the mean alone (require: mean)",
}


def is_tested(test: Mapping[str, Any]) -> bool:
    """Whether a claim's test kind yields a p-value (and so enters the Holm family)."""
    kind = test["kind"]
    if kind == "mean_within":
        return test.get("require") != "mean"
    return kind in ("difference", "correlation", "extreme", "rank")


def _t_sf(x: float, df: float) -> float:
    from scipy.stats import t

    return float(t.sf(x, df))


def _t_cdf(x: float, df: float) -> float:
    from scipy.stats import t

    return float(t.cdf(x, df))


def one_sided_ps(mean: float, se: float, df: float, low_bound: float, high_bound: float) -> tuple[float, float]:
    """(p of H0: mu <= low_bound, p of H0: mu >= high_bound) for a t statistic with standard error `se`.

    A zero standard error (every value equal) makes each p 0 when the mean is strictly beyond the bound, else 1.
    """
    if se == 0.0:
        return (0.0 if mean > low_bound else 1.0), (0.0 if mean < high_bound else 1.0)
    return _t_sf((mean - low_bound) / se, df), _t_cdf((mean - high_bound) / se, df)


def paired_or_welch(baseline: Mapping[int, float], other: Mapping[int, float]) -> tuple[float, float, float] | None:
    """(mean, se, df) of other - baseline by the rule of stats.compare_seeds (paired when every seed of
    `other` has a baseline value and there are >= 2 pairs, else Welch); None without enough values."""
    shared = [s for s in other if s in baseline]
    if len(shared) >= 2 and len(shared) == len(other):
        d = np.asarray([other[s] - baseline[s] for s in sorted(shared)], dtype=np.float64)
        return float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d)), float(len(d) - 1)
    a = np.asarray(list(baseline.values()), dtype=np.float64)
    b = np.asarray(list(other.values()), dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    se2 = va + vb
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se2 > 0 else float(len(a) + len(b) - 2)
    return float(b.mean() - a.mean()), math.sqrt(se2), df


def difference_p(expect: str, mean: float, se: float, df: float, margin: float) -> float:
    """The one-sided (or TOST) p-value of a difference claim (see the module docstring)."""
    above_plus, below_plus = one_sided_ps(mean, se, df, margin, margin)
    above_minus, below_minus = one_sided_ps(mean, se, df, -margin, -margin)
    return {"greater": above_plus, "less": below_minus, "not_less": above_minus, "not_greater": below_plus,
            "equivalent": max(above_minus, below_plus)}[expect]


def spearman_permutation_p(x: Sequence[float], y: Sequence[float], permutations: int = PERMUTATIONS,
                           seed: int = PERMUTATION_SEED) -> float:
    """One-sided permutation p of Spearman's rho > 0: (1 + #{permuted rho >= observed}) / (1 + permutations)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)  # average ranks for ties, as claims._spearman
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return 1.0
    observed = float(rx @ ry) / denom
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(ry, (permutations, 1)), axis=1)
    rhos = perms @ rx / denom
    count = int(np.sum(rhos >= observed - 1e-12))  # ties with the observed statistic count against it
    return (1 + count) / (1 + permutations)


def claim_p(test: Mapping[str, Any], res: Any) -> tuple[float | None, str]:
    """(raw p-value, what it tests) of one claim on its part's results; p None when the data are missing or
    the kind is descriptive (then the text says so)."""
    from normbench.experiments.selection import only as _one
    from normbench.experiments.selection import select
    from normbench.report.stats import compare_seeds

    kind = test["kind"]
    if not is_tested(test):
        return None, _DESCRIPTIVE_WHY[kind]
    if kind == "difference":
        expect, margin = test["expect"], float(test.get("margin", 0.0))
        neg = 0.0 - margin  # not -margin: no "-0" for a zero margin
        name = {"greater": f"one-sided t, H0: d <= {margin:g}", "less": f"one-sided t, H0: d >= {neg:g}",
                "not_less": f"one-sided t, H0: d <= {neg:g}", "not_greater": f"one-sided t, H0: d >= {margin:g}",
                "equivalent": f"TOST, max of the one-sided ps against ±{margin:g}"}[expect]
        a, b = _one(res, test["a"]), _one(res, test["b"])
        if a is None or b is None:
            return None, name
        base = dict(b.metric_values(test.get("metric_b", test["metric"])))
        other = dict(a.metric_values(test["metric"]))
        if not base or not other:
            return None, name
        stats = paired_or_welch(base, other)
        if stats is None:
            return None, name
        method = compare_seeds(base, other).method
        return difference_p(expect, *stats, margin), f"{name} ({method})"
    if kind == "mean_within":
        lo, hi = float(test["low"]), float(test["high"])
        name = f"TOST-style one-sample t against [{lo:g}, {hi:g}]"
        g = _one(res, test["select"])
        vals = [v for _, v in g.metric_values(test["metric"])] if g is not None else []
        if len(vals) < 2:
            return None, name
        arr = np.asarray(vals, dtype=np.float64)
        above, below = one_sided_ps(float(arr.mean()), float(arr.std(ddof=1)) / math.sqrt(len(arr)),
                                    float(len(arr) - 1), lo, hi)
        return max(above, below), name
    if kind in ("extreme", "rank"):
        return _ordering_p(test, res)
    # correlation: the configurations' means, as claims._correlation
    name = f"permutation test of Spearman's rho > 0 ({PERMUTATIONS:,} seeded permutations)"
    pairs = []
    for g in select(res, test.get("select", {})):
        xs = [v for _, v in g.metric_values(test["x"])]
        ys = [v for _, v in g.metric_values(test["y"])]
        if xs and ys:
            pairs.append((float(np.mean(xs)), float(np.mean(ys))))
    if len(pairs) < 3:
        return None, name
    return spearman_permutation_p([p[0] for p in pairs], [p[1] for p in pairs]), name


def _ordering_p(test: Mapping[str, Any], res: Any) -> tuple[float | None, str]:
    """The p-value of an extreme or rank claim from one-sided pairwise tests (see the module docstring)."""
    from normbench.experiments.selection import only as _one
    from normbench.experiments.selection import select

    metric = test["metric"]
    above = test["kind"] == "extreme" and test["which"] == "max"
    target = _one(res, test["select"])
    others = [g for g in select(res, test["among"]) if g is not target]
    if test["kind"] == "extreme":
        name = (f"intersection-union: the largest of the one-sided t ps of select "
                f"{'above' if above else 'below'} each other configuration")
    else:
        name = "r x the (k - r)-th smallest one-sided t p of select below each other configuration"
    if target is None:
        return None, name
    mine = dict(target.metric_values(metric))
    ps = []
    for g in others:
        theirs = dict(g.metric_values(metric))
        if not theirs:
            continue
        stats = paired_or_welch(theirs, mine) if len(mine) >= 2 else None
        if stats is None:
            return None, name
        ps.append(difference_p("greater" if above else "less", *stats, 0.0))
    if not ps:
        return None, name
    ps.sort()
    if test["kind"] == "extreme":
        return ps[-1], name
    r, k = int(test["at_most"]), len(ps) + 1
    if k - r <= 0:
        return None, _DESCRIPTIVE_WHY["rank"]
    return min(1.0, r * ps[k - r - 1]), name


def control(results: list[Any], claims: list[dict[str, Any]], parts: Mapping[str, Any],
            alpha: float = DEFAULT_ALPHA) -> list[Any]:
    """Adds each claim's raw and Holm-adjusted p (over the tested claims with a p-value) to its result and
    keeps a tested claim held only when its adjusted p is <= alpha. Returns `results`, changed in place."""
    from normbench.report.stats import holm_adjust

    raw: list[float | None] = []
    for r, c in zip(results, claims, strict=True):
        p, method = claim_p(c["test"], parts[c["test"]["part"]])
        r.evidence = TESTED if is_tested(c["test"]) else DESCRIPTIVE
        r.p_method, r.p_value = method, p
        raw.append(p)
    for r, adjusted in zip(results, holm_adjust(raw), strict=True):
        r.p_holm = adjusted
        r.declared_held = r.held
        r.raw_significant = None if r.p_value is None else r.p_value <= alpha
        if r.evidence == TESTED and r.held is True and (adjusted is None or adjusted > alpha):
            r.held = False
    return results


def family_size(results: list[Any]) -> int:
    """m: the tested claims with a p-value (the Holm family)."""
    return sum(1 for r in results if r.evidence == TESTED and r.p_value is not None)


def format_p(p: float | None) -> str:
    """A p-value for tables: 3 significant digits, small ones in scientific notation."""
    if p is None:
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3g}"
