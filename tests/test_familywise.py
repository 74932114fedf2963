"""Family-wise control over a study's claims: each test's p-value against scipy, Holm against a hand computation,
a p = 0.024 claim among 6 that does not survive Holm, the TOST p, descriptive claims outside the family."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from normbench.experiments.claims import evaluate_all
from normbench.experiments.familywise import (
    difference_p,
    family_size,
    paired_or_welch,
    spearman_permutation_p,
)
from normbench.experiments.readme import claims_summary
from normbench.experiments.records import results_from_records

SEEDS = range(5)
SPREAD = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # sd = sqrt(2.5) * scale


def _arm_values(target_p: float, scale: float = 0.01) -> np.ndarray:
    """Five per-seed differences whose one-sided paired t-test of d > 0 has p = target_p exactly."""
    sd = math.sqrt(2.5) * scale
    mean = stats.t.isf(target_p, 4) * sd / math.sqrt(5)
    return mean + SPREAD * scale


def _results(arms: dict[str, np.ndarray], metric: str = "test_acc") -> dict:
    """One part whose configuration `arm=<name>` has the given per-seed values (and a base arm of zeros)."""
    rows, number = [], 0
    for arm, values in {"base": np.zeros(5), **arms}.items():
        for seed, v in zip(SEEDS, values, strict=True):
            rows.append({"number": number, "state": "COMPLETE", "params": {"arm": arm, "seed": seed},
                         "summary": {metric: float(v), "status": "ok", "seed": seed}, "fail_reason": None,
                         "datetime_start": None, "datetime_complete": None})
            number += 1
    return {"main": results_from_records("s-main", rows)}


def _greater(cid: str, arm: str) -> dict:
    return {"id": cid, "statement": f"{arm} beats base",
            "test": {"kind": "difference", "part": "main", "metric": "test_acc", "a": {"arm": arm},
                     "b": {"arm": "base"}, "expect": "greater"}}


def test_six_claims_get_one_sided_ps_and_holm_by_hand_and_p_0024_does_not_survive():
    targets = {"a0": 0.001, "a1": 0.024, "a2": 0.03, "a3": 0.2, "a4": 0.5, "a5": 0.8}
    arms = {a: _arm_values(p) for a, p in targets.items()}
    claims = [_greater(f"c_{a}", a) for a in targets]
    out = evaluate_all(claims, _results(arms))
    raw = [c.p_value for c in out]
    # each raw p is scipy's one-sided paired t-test
    for c, a in zip(out, targets, strict=True):
        ref = stats.ttest_rel(arms[a], np.zeros(5), alternative="greater").pvalue
        assert c.p_value == pytest.approx(ref, rel=1e-9) == pytest.approx(targets[a], rel=1e-9)
    # Holm by hand: sort, multiply the i-th smallest (from 0) by m - i = 6, 5, 4, ..., running maximum, cap 1
    ordered = sorted(raw)
    by_hand, running = {}, 0.0
    for i, p in enumerate(ordered):
        running = max(running, min(1.0, (6 - i) * p))
        by_hand[p] = running
    assert [c.p_holm for c in out] == pytest.approx([by_hand[p] for p in raw])
    assert [round(c.p_holm, 4) for c in out] == [0.006, 0.12, 0.12, 0.6, 1.0, 1.0]
    verdicts = {c.id: c.verdict for c in out}
    # 0.024 passes its own pre-declared test (the 95% interval is above 0: one-sided p < 0.025) ...
    assert out[1].declared_held is True
    # ... but not Holm over the 6 claims: 5 x 0.024 = 0.12 > 0.05
    assert verdicts["c_a1"] == "not held (after Holm)" and out[1].held is False
    assert verdicts["c_a0"] == "held"
    assert verdicts["c_a3"] == "not held"
    record = out[1].to_record()
    assert record["p_value"] == pytest.approx(0.024) and record["p_holm"] == pytest.approx(0.12)
    assert json.loads(json.dumps(record))["evidence"] == "test"


def test_alone_the_same_claim_holds():
    out = evaluate_all([_greater("only", "a1")], _results({"a1": _arm_values(0.024)}))
    assert out[0].p_holm == pytest.approx(0.024) and out[0].verdict == "held"


def test_tost_p_is_the_larger_one_sided_p_against_the_margins():
    rng = np.random.default_rng(3)
    d = 0.004 + 0.006 * rng.standard_normal(5)
    margin = 0.01
    test = {"kind": "difference", "part": "main", "metric": "test_acc", "a": {"arm": "x"}, "b": {"arm": "base"},
            "expect": "equivalent", "margin": margin}
    out = evaluate_all([{"id": "eq", "statement": "s", "test": test}], _results({"x": d}))
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    assert out[0].p_value == pytest.approx(max(lower, upper), rel=1e-9)
    assert "TOST" in out[0].p_method
    # the 90% interval inside +-margin <=> TOST p < 0.05 (the declared test and the p agree)
    ci = stats.t.interval(0.9, 4, loc=d.mean(), scale=stats.sem(d))
    assert (-margin < ci[0] and ci[1] < margin) == (max(lower, upper) < 0.05)


@pytest.mark.parametrize("expect, margin, alternative, null", [
    ("less", 0.0, "less", 0.0), ("not_less", 0.005, "greater", -0.005), ("not_greater", 0.005, "less", 0.005),
    ("greater", 0.002, "greater", 0.002),
])
def test_one_sided_ps_against_the_margin_match_scipy(expect, margin, alternative, null):
    d = np.array([0.003, -0.001, 0.004, 0.0, 0.002])
    mean, se, df = paired_or_welch(dict(enumerate(np.zeros(5))), dict(enumerate(d)))
    ref = stats.ttest_1samp(d, null, alternative=alternative).pvalue
    assert difference_p(expect, mean, se, df, margin) == pytest.approx(ref, rel=1e-9)


def test_welch_p_when_the_seeds_do_not_pair():
    a, b = {0: 0.1, 1: 0.2, 2: 0.15}, {5: 0.3, 6: 0.35, 7: 0.28, 8: 0.31}
    mean, se, df = paired_or_welch(a, b)
    ref = stats.ttest_ind(list(b.values()), list(a.values()), equal_var=False, alternative="greater").pvalue
    assert difference_p("greater", mean, se, df, 0.0) == pytest.approx(ref, rel=1e-9)


def test_mean_within_p_is_tost_against_its_bounds():
    values = np.array([0.84, 0.86, 0.85, 0.87, 0.855])
    test = {"kind": "mean_within", "part": "main", "metric": "test_acc", "select": {"arm": "x"}, "low": 0.83,
            "high": 0.88}
    out = evaluate_all([{"id": "m", "statement": "s", "test": test}], _results({"x": values}))
    ref = max(stats.ttest_1samp(values, 0.83, alternative="greater").pvalue,
              stats.ttest_1samp(values, 0.88, alternative="less").pvalue)
    assert out[0].p_value == pytest.approx(ref, rel=1e-9) and out[0].verdict == "held"


def test_spearman_permutation_p_is_close_to_the_exact_one():
    x = [0.1, 0.5, 0.2, 0.9, 0.7, 0.4, 0.8]
    y = [0.2, 0.4, 0.1, 0.8, 0.9, 0.3, 0.5]
    observed = stats.spearmanr(x, y).statistic
    ry = stats.rankdata(y)
    exact = np.mean([stats.spearmanr(stats.rankdata(x), [ry[i] for i in perm]).statistic >= observed - 1e-12
                     for perm in itertools.permutations(range(len(y)))])
    p = spearman_permutation_p(x, y)
    assert p == spearman_permutation_p(x, y)  # seeded: deterministic
    assert abs(p - exact) < 0.005  # 20,000 permutations: Monte Carlo error ~ 0.0015 at p ~ 0.02


def test_descriptive_claims_are_outside_the_family_and_the_counts():
    arms = {"a0": _arm_values(0.001), "a1": _arm_values(0.01)}
    claims = [_greater("t0", "a0"), _greater("t1", "a1"),
              {"id": "r", "statement": "a0's mean is a probability",
               "test": {"kind": "mean_within", "part": "main", "metric": "test_acc", "select": {"arm": "a0"},
                        "low": 0, "high": 1, "require": "mean"}}]
    out = evaluate_all(claims, _results(arms))
    assert family_size(out) == 2
    assert out[2].evidence == "descriptive" and out[2].p_value is None and out[2].p_holm is None
    assert out[2].verdict == "held (descriptive)"
    assert out[1].p_holm == pytest.approx(0.01)  # m = 2: 0.001 x 2, then 0.01 x 1
    assert out[0].p_holm == pytest.approx(0.002)

    class Exp:
        name, declared, alpha = "s", "2026-11-30", 0.05

    text = claims_summary(Exp(), out)
    assert "Holm over the m = 2 tested claims at alpha = 0.05" in text
    assert "2 of 2 tested claims held" in text and "1 claim is descriptive" in text


def test_a_study_level_alpha_changes_the_threshold():
    out = evaluate_all([_greater("t", "a")], _results({"a": _arm_values(0.02)}), alpha=0.01)
    assert out[0].p_holm == pytest.approx(0.02) and out[0].verdict == "not held (not significant)"


def test_extreme_p_is_the_intersection_union_of_pairwise_one_sided_tests():
    rng = np.random.default_rng(7)
    arms = {"top": 0.05 + 0.01 * rng.standard_normal(5), "mid": 0.03 + 0.01 * rng.standard_normal(5),
            "low": 0.01 + 0.01 * rng.standard_normal(5)}
    test = {"kind": "extreme", "part": "main", "metric": "test_acc", "select": {"arm": "top"}, "among": {},
            "which": "max"}
    out = evaluate_all([{"id": "x", "statement": "s", "test": test}], _results(arms))
    others = [arms["mid"], arms["low"], np.zeros(5)]
    ref = max(stats.ttest_rel(arms["top"], o, alternative="greater").pvalue for o in others)
    assert out[0].evidence == "test" and out[0].p_value == pytest.approx(ref, rel=1e-9)


def test_rank_p_is_r_times_the_k_minus_r_th_smallest_pairwise_p():
    rng = np.random.default_rng(11)
    arms = {name: m + 0.01 * rng.standard_normal(5) for name, m in
            [("best", -0.04), ("b", -0.035), ("c", -0.01), ("d", 0.0), ("e", 0.02)]}  # base is 0 too
    test = {"kind": "rank", "part": "main", "metric": "test_acc", "select": {"arm": "b"}, "among": {},
            "at_most": 2}
    out = evaluate_all([{"id": "x", "statement": "s", "test": test}], _results(arms))
    ps = sorted(stats.ttest_rel(arms["b"], v, alternative="less").pvalue
                for v in [arms["best"], arms["c"], arms["d"], arms["e"], np.zeros(5)])
    k, r = 6, 2
    assert out[0].p_value == pytest.approx(min(1.0, r * ps[k - r - 1]), rel=1e-9)


def test_a_finding_can_cite_the_raw_and_the_adjusted_p():
    from normbench.experiments.readme import fill_finding

    arms = {a: _arm_values(p) for a, p in {"a0": 0.001, "a1": 0.024}.items()}
    out = evaluate_all([_greater("c0", "a0"), _greater("c1", "a1")], _results(arms))
    text = fill_finding("p = {{c1.p_value:g}}, Holm p = {{c1.p_holm:g}}", out, "s")
    assert text == "p = 0.024, Holm p = 0.024"  # m = 2: 0.001 x 2 = 0.002, then max(0.002, 0.024 x 1)
