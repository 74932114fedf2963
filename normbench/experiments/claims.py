"""Claims: hypotheses a study declares before its runs, each with a machine-checkable test.

    claims:
      - id: bn_small_batch
        statement: BN's test error at b=2 exceeds its error at b=32.
        test: {kind: difference, part: paper, metric: test_error,
               a: {norm: bn, data.batch_size: 2}, b: {norm: bn, data.batch_size: 32}, expect: greater}

Test kinds (metrics are run metrics of normbench.report.metrics; selectors pick configurations by their
swept values; `level` defaults to 0.95):
    difference     a - b per seed: paired Student-t interval when the seeds pair up, else Welch. `metric`
                   is a's metric and b's unless `metric_b` names b's (e.g. precise vs EMA accuracy of one
                   configuration).
                   expect: greater (interval above margin), less (below -margin), equivalent (the
                   1 - 2(1 - level) interval inside +-margin: two one-sided tests), not_less (interval
                   above -margin: non-inferiority), not_greater.
    mean_within    the mean's t-interval (require: interval, default) or the mean (require: mean) lies in
                   [low, high].
    range_less     over the values of `over`, the range (max - min) of a's per-value means is below b's.
    argmin_between the value of `over` (a swept key or a run field) with the lowest mean lies in
                   [low, high]; `interior: true` also requires it not to be an end of the grid.
    argmin_ratio   the argmins of `over` for selections a and b are within a factor `max_ratio`.
    extreme        the mean of `select` is the largest (which: max) or smallest (min) of the
                   configurations matching `among`.
    rank           the mean of `select` ranks at most `at_most` among the configurations matching `among`
                   (rank 1 = the lowest mean; for an error, the best).
    correlation    Spearman's rho between two metrics across the configurations matching `select` is at
                   least `min`.
    frequency      the (run, epoch) pairs of `select` where history[better] - history[worse] exceeds
                   `threshold`: at least `min_count` of them (with a Clopper-Pearson interval of the rate).

A claim whose data are missing (no finished run for a selection) is reported as not evaluable; a claim
whose test fails is reported as not held. Claims are never edited after the runs.

Family-wise error (normbench.experiments.familywise): the claims that are statistical tests (difference,
mean_within with its interval, correlation) each get a p-value, Holm-adjusted over all of a study's tested
claims at the study's `alpha` (0.05 unless declared); such a claim holds when its pre-declared test passes
and its adjusted p is <= alpha. The other kinds are descriptive (no test): shown, never counted as evidence.

A claim that contrasts configurations trained with different optimizer batches, learning rates or step counts
must say so (`confounded: "<why>"`, normbench.experiments.protocols); otherwise the study does not load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from normbench.errors import ConfigError
from normbench.experiments.selection import only as _one
from normbench.experiments.selection import select
from normbench.report.metrics import epoch_gaps, is_known_metric, metric_value
from normbench.report.study import ConfigGroup, SweepResults
from normbench.report.table_model import format_value

CLAIM_KEYS = ("id", "statement", "test", "confounded")
EXPECT = ("greater", "less", "equivalent", "not_less", "not_greater")
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required args, optional args); every kind takes part and level
    "difference": (("metric", "a", "b", "expect"), ("metric_b", "margin", "scale", "unit")),
    "mean_within": (("metric", "select", "low", "high"), ("require", "scale", "unit")),
    "range_less": (("metric", "over", "a", "b"), ("values", "scale", "unit")),
    "argmin_between": (("metric", "over", "select", "low", "high"), ("interior",)),
    "argmin_ratio": (("metric", "over", "a", "b", "max_ratio"), ()),
    "extreme": (("metric", "select", "among", "which"), ("scale", "unit")),
    "rank": (("metric", "select", "among", "at_most"), ("scale", "unit")),
    "correlation": (("x", "y", "min"), ("select",)),
    "frequency": (("select", "threshold", "min_count"), ("better", "worse", "scale", "unit")),
}


@dataclass
class ClaimResult:
    """A claim's verdict: `held` True/False, or None when its data are missing (`detail` says why)."""

    id: str
    statement: str
    test: str
    held: bool | None
    detail: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    evidence: str = "test"  # test | descriptive (no test: shown, never counted as evidence)
    p_method: str | None = None  # what the p-value tests (or why the claim has no test)
    p_value: float | None = None  # raw p of the claim's test
    p_holm: float | None = None  # Holm-adjusted over the study's tested claims
    confounded: str | None = None  # the declared reason a contrast crosses optimizer batch, lr or steps
    declared_held: bool | None = None  # the pre-declared test's own verdict, before Holm (None: not set)
    raw_significant: bool | None = None  # raw p <= alpha (the study's family-wise rate)

    @property
    def verdict(self) -> str:
        if self.held is None:
            return "not evaluable"
        if self.evidence != "test":
            return "held (descriptive)" if self.held else "not held (descriptive)"
        if self.held is False and self.declared_held is True:
            # its point condition held; the test did not reject at alpha (raw p), or only before Holm
            return "not held (after Holm)" if self.raw_significant else "not held (not significant)"
        return "held" if self.held else "not held"

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


# ---------------------------------------------------------------------------------------------- checks


def _fail(exp: Any, where: str, msg: str) -> ConfigError:
    return ConfigError(f"study {exp.name}: {where}: {msg}")


def check_claim(exp: Any, raw: Any, index: int) -> dict[str, Any]:
    """Validates one claim of a study at load time; returns it as a plain mapping."""
    where = f"claims[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(exp, where, "a claim is a mapping {id, statement, test}")
    unknown = [k for k in raw if k not in CLAIM_KEYS]
    if unknown:
        raise _fail(exp, where, f"unknown key '{unknown[0]}'; accepted: {', '.join(CLAIM_KEYS)}")
    cid, statement, test = raw.get("id"), raw.get("statement"), raw.get("test")
    if not isinstance(cid, str) or not cid.isidentifier():
        raise _fail(exp, where, f"id must be an identifier, got {cid!r}")
    where = f"claim '{cid}'"
    if not isinstance(statement, str) or not statement.strip():
        raise _fail(exp, where, "needs a statement (the hypothesis in words)")
    if not isinstance(test, Mapping):
        raise _fail(exp, where, f"needs a test mapping with a kind ({', '.join(KINDS)})")
    kind = test.get("kind")
    if kind not in KINDS:
        raise _fail(exp, where, f"test kind {kind!r} is not accepted; accepted: {', '.join(KINDS)}")
    required, optional = KINDS[kind]
    accepted = ("kind", "part", "level", *required, *optional)
    for k in test:
        if k not in accepted:
            raise _fail(exp, where, f"test '{kind}' has unknown argument '{k}'; accepted: {', '.join(accepted)}")
    for k in ("part", *required):
        if k not in test:
            raise _fail(exp, where, f"test '{kind}' needs '{k}'")
    part = test["part"]
    if part not in exp.parts:
        raise _fail(exp, where, f"part '{part}' is not declared; parts: {', '.join(exp.parts)}")
    swept = set(exp.parts[part].swept_keys)
    metric = test.get("metric")
    if isinstance(metric, str) and not is_known_metric(metric):  # else it reads NOT EVALUABLE over finished runs
        raise _fail(exp, where, f"metric {metric!r} is not a numeric field of the run record, its error form "
                                "(test_error) or a derived metric (`python -m normbench.record` lists the fields)")
    for k in ("a", "b", "select", "among"):
        if k in test:
            sel = test[k]
            if not isinstance(sel, Mapping):
                raise _fail(exp, where, f"'{k}' must be a mapping of swept keys to values, got {sel!r}")
            for key in sel:
                if key not in swept:
                    raise _fail(exp, where, f"'{k}' selects on '{key}', which part '{part}' does not sweep; "
                                            f"swept: {', '.join(sorted(swept))}")
    if kind == "difference" and test["expect"] not in EXPECT:
        raise _fail(exp, where, f"expect {test['expect']!r} is not accepted; accepted: {', '.join(EXPECT)}")
    if kind == "difference" and test["expect"] == "equivalent" and not test.get("margin"):
        raise _fail(exp, where, "expect: equivalent needs a margin > 0")
    if kind == "extreme" and test["which"] not in ("max", "min"):
        raise _fail(exp, where, f"which must be max or min, got {test['which']!r}")
    level = test.get("level", 0.95)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise _fail(exp, where, f"level must be in (0, 1), got {level!r}")
    confounded = raw.get("confounded")
    if confounded is not None and (not isinstance(confounded, str) or not confounded.strip()):
        raise _fail(exp, where, "confounded must be a text saying why the contrast crosses optimizer batch, lr or "
                                f"steps, got {confounded!r}")
    out = {"id": cid, "statement": " ".join(statement.split()), "test": dict(test)}
    if confounded is not None:
        out["confounded"] = " ".join(confounded.split())
    return out


# ---------------------------------------------------------------------------------------------- evaluation


def _describe(selector: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in selector.items()) or "all"


def _fmt(value: float | None, scale: float, unit: str, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    v = value * scale
    digits = 2 if abs(v) < 1000 else 0
    return (f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}") + (f" {unit}" if unit else "")


def _units(test: Mapping[str, Any]) -> tuple[float, str]:
    """Display scale and unit: accuracies and errors in %, their differences and gains in points (pp)."""
    metric = str(test.get("metric", ""))
    if "gain" in metric or "gap" in metric or test["kind"] in ("difference", "range_less", "frequency"):
        default = (100.0, "pp") if ("acc" in metric or "error" in metric or "gain" in metric
                                    or test["kind"] == "frequency") else (1.0, "")
    else:
        default = (100.0, "%") if ("acc" in metric or "error" in metric) else (1.0, "")
    return float(test.get("scale", default[0])), str(test.get("unit", default[1]))


def _x_value(group: ConfigGroup, over: str) -> float | None:
    """The x of a configuration: its swept value, or a run field shared by its runs (e.g. ema_horizon_samples)."""
    if over in group.values:
        v = group.values[over]
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    values = {v for v in (metric_value(t.summary, over) for t in group.by_seed.values() if t.outcome == "ok")
              if v is not None}
    return float(np.mean(sorted(values))) if values else None


def _means(groups: list[ConfigGroup], metric: str) -> list[tuple[ConfigGroup, float]]:
    out = []
    for g in groups:
        vals = [v for _, v in g.metric_values(metric)]
        if vals:
            out.append((g, float(np.mean(vals))))
    return out


def evaluate(claim: dict[str, Any], results: dict[str, SweepResults]) -> ClaimResult:
    """The verdict of one claim on the parts' results."""
    test = claim["test"]
    res = results[test["part"]]
    fn = _EVALUATORS[test["kind"]]
    held, detail, stats = fn(test, res)
    return ClaimResult(claim["id"], claim["statement"], describe_test(test), held, detail, **stats,
                       confounded=claim.get("confounded"))


def evaluate_all(claims: list[dict[str, Any]], results: dict[str, SweepResults],
                 alpha: float = 0.05) -> list[ClaimResult]:
    """Every claim's verdict, with Holm's family-wise control over the tested ones at `alpha`."""
    from normbench.experiments.familywise import control

    return control([evaluate(c, results) for c in claims], claims, results, alpha)


def describe_test(test: Mapping[str, Any]) -> str:
    """The pre-declared test in words (shown beside the verdict)."""
    kind, level = test["kind"], float(test.get("level", 0.95))
    scale, unit = _units(test)
    if kind == "difference":
        margin = _fmt(float(test.get("margin", 0.0)), scale, unit)
        what = {"greater": "above +" + margin if test.get("margin") else "above 0",
                "less": "below -" + margin if test.get("margin") else "below 0",
                "equivalent": f"inside ±{margin} (two one-sided tests, {100 * (2 * level - 1):g}% interval)",
                "not_less": f"above -{margin}", "not_greater": f"below +{margin}"}[test["expect"]]
        lvl = "" if test["expect"] == "equivalent" else f"{100 * level:g}% "
        metric_b = test.get("metric_b", test["metric"])
        return (f"{test['metric']}[{_describe(test['a'])}] - {metric_b}[{_describe(test['b'])}] per seed: "
                f"the {lvl}interval lies {what}")
    if kind == "mean_within":
        what = "mean" if test.get("require") == "mean" else f"{100 * level:g}% t-interval of the mean"
        return (f"{test['metric']}[{_describe(test['select'])}]: the {what} lies in "
                f"[{_fmt(test['low'], scale, '')}, {_fmt(test['high'], scale, unit)}]")
    if kind == "range_less":
        return (f"range over {test['over']} of the mean {test['metric']}: [{_describe(test['a'])}] < "
                f"[{_describe(test['b'])}]")
    if kind == "argmin_between":
        extra = ", not at an end of the grid" if test.get("interior") else ""
        return (f"the {test['over']} minimising the mean {test['metric']} of [{_describe(test['select'])}] lies in "
                f"[{test['low']:g}, {test['high']:g}]{extra}")
    if kind == "argmin_ratio":
        return (f"the {test['over']} minimising the mean {test['metric']}: [{_describe(test['a'])}] and "
                f"[{_describe(test['b'])}] within a factor {test['max_ratio']:g}")
    if kind == "extreme":
        return (f"mean {test['metric']} of [{_describe(test['select'])}] is the {test['which']} among "
                f"[{_describe(test['among'])}]")
    if kind == "rank":
        return (f"mean {test['metric']} of [{_describe(test['select'])}] ranks at most {test['at_most']} "
                f"(1 = lowest) among [{_describe(test['among'])}]")
    if kind == "correlation":
        return (f"Spearman rho between the mean {test['x']} and mean {test['y']} of the configurations "
                f"[{_describe(test.get('select', {}))}] >= {test['min']:g}")
    better, worse = test.get("better", "test_acc_precise"), test.get("worse", "test_acc_ema")
    return (f"(run, epoch) pairs of [{_describe(test['select'])}] with {better} - {worse} > "
            f"{_fmt(test['threshold'], scale, unit)}: at least {test['min_count']}")


def _difference(test, res):
    from normbench.report.stats import compare_seeds

    scale, unit = _units(test)
    a, b = _one(res, test["a"]), _one(res, test["b"])
    if a is None or b is None:
        which = "a" if a is None else "b"
        return None, f"no single configuration matches {which} = {_describe(test[which])}", {}
    level = float(test.get("level", 0.95))
    expect, margin = test["expect"], float(test.get("margin", 0.0))
    ci_level = 2 * level - 1 if expect == "equivalent" else level
    metric_b = test.get("metric_b", test["metric"])
    cmp = compare_seeds(dict(b.metric_values(metric_b)), dict(a.metric_values(test["metric"])), ci_level)
    stats = {"value": cmp.mean, "low": cmp.low, "high": cmp.high, "n": cmp.n}
    if cmp.low is None or cmp.high is None:
        return None, f"mean difference {_fmt(cmp.mean, scale, unit, True)} with n={cmp.n}: too few seeds " \
                     "for an interval", stats
    held = {"greater": cmp.low > margin, "less": cmp.high < -margin,
            "equivalent": -margin < cmp.low and cmp.high < margin,
            "not_less": cmp.low > -margin, "not_greater": cmp.high < margin}[expect]
    # the claim's own p (one-sided against its margin, or TOST) comes from familywise; the two-sided p of
    # "no difference" would be a third number beside it
    detail = (f"{_fmt(cmp.mean, scale, unit, True)}, {100 * ci_level:g}% CI [{_fmt(cmp.low, scale, '', True)}, "
              f"{_fmt(cmp.high, scale, '', True)}] ({cmp.method}, n={cmp.n})")
    return held, detail, stats


def _mean_within(test, res):
    from normbench.report.stats import t_interval

    scale, unit = _units(test)
    g = _one(res, test["select"])
    if g is None:
        return None, f"no single configuration matches {_describe(test['select'])}", {}
    vals = [v for _, v in g.metric_values(test["metric"])]
    if not vals:
        return None, "no finished run", {}
    ci = t_interval(vals, float(test.get("level", 0.95)))
    lo, hi = float(test["low"]), float(test["high"])
    stats = {"value": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}
    if test.get("require") == "mean":
        held = lo <= ci.mean <= hi
    elif ci.low is None:
        return None, f"mean {_fmt(ci.mean, scale, unit)} with n={ci.n}: too few seeds for an interval", stats
    else:
        held = lo <= ci.low and ci.high <= hi
    interval = "" if ci.low is None else \
        f", {100 * ci.level:g}% CI [{_fmt(ci.low, scale, '')}, {_fmt(ci.high, scale, '')}]"
    return held, f"mean {_fmt(ci.mean, scale, unit)}{interval} (n={ci.n})", stats


def _range(res, test, selector) -> tuple[float | None, int]:
    groups = [g for g in select(res, selector) if test["over"] in g.values]
    allowed = test.get("values")
    if allowed is not None:
        keep = {format_value(v) for v in allowed}
        groups = [g for g in groups if format_value(g.values[test["over"]]) in keep]
    means = [m for _, m in _means(groups, test["metric"])]
    return (max(means) - min(means) if len(means) >= 2 else None), len(means)


def _range_less(test, res):
    scale, unit = _units(test)
    ra, na = _range(res, test, test["a"])
    rb, nb = _range(res, test, test["b"])
    if ra is None or rb is None:
        return None, "fewer than two values of the x key with finished runs", {}
    detail = (f"range {_fmt(ra, scale, unit)} over {na} values for [{_describe(test['a'])}] vs "
              f"{_fmt(rb, scale, unit)} over {nb} for [{_describe(test['b'])}]")
    return ra < rb, detail, {"value": ra - rb, "n": min(na, nb)}


def _argmin(res, test, selector) -> tuple[float | None, list[float]]:
    pts = []
    for g, m in _means(select(res, selector), test["metric"]):
        x = _x_value(g, test["over"])
        if x is not None:
            pts.append((x, m))
    if not pts:
        return None, []
    pts.sort()
    return min(pts, key=lambda p: p[1])[0], [p[0] for p in pts]


def _argmin_between(test, res):
    x, xs = _argmin(res, test, test["select"])
    if x is None:
        return None, "no finished run", {}
    held = float(test["low"]) <= x <= float(test["high"])
    if test.get("interior"):
        held = held and xs[0] < x < xs[-1]
    return held, f"minimum at {test['over']} = {x:g} (grid {xs[0]:g} to {xs[-1]:g}, {len(xs)} points)", \
        {"value": x, "n": len(xs)}


def _argmin_ratio(test, res):
    xa, _ = _argmin(res, test, test["a"])
    xb, _ = _argmin(res, test, test["b"])
    if xa is None or xb is None or xa <= 0 or xb <= 0:
        return None, "no positive argmin for both selections", {}
    ratio = max(xa, xb) / min(xa, xb)
    return ratio <= float(test["max_ratio"]), f"argmins {xa:g} and {xb:g}: ratio {ratio:.3g}", {"value": ratio}


def _extreme(test, res):
    scale, unit = _units(test)
    target = _one(res, test["select"])
    among = _means(select(res, test["among"]), test["metric"])
    if target is None or not among:
        return None, "the selection has no finished run", {}
    mine = next((m for g, m in among if g is target), None)
    if mine is None:
        return None, "the selected configuration has no finished run", {}
    others = [m for g, m in among if g is not target]
    best = max(others) if test["which"] == "max" else min(others)
    held = mine > best if test["which"] == "max" else mine < best
    word = "next largest" if test["which"] == "max" else "next smallest"
    return held, f"{_fmt(mine, scale, unit)} vs {word} {_fmt(best, scale, unit)} ({len(among)} configurations)", \
        {"value": mine, "n": len(among)}


def _rank(test, res):
    scale, unit = _units(test)
    target = _one(res, test["select"])
    among = sorted(_means(select(res, test["among"]), test["metric"]), key=lambda gm: gm[1])
    place = next((i + 1 for i, (g, _) in enumerate(among) if g is target), None)
    if place is None:
        return None, "the selected configuration has no finished run", {}
    mine = among[place - 1][1]
    return place <= int(test["at_most"]), \
        f"rank {place} of {len(among)} (mean {_fmt(mine, scale, unit)}; lowest {_fmt(among[0][1], scale, unit)})", \
        {"value": float(place), "n": len(among)}


def _spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in set(v):  # average ranks for ties
            idx = [i for i, w in enumerate(v) if w == val]
            r[idx] = np.mean(r[idx])
        return r

    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def _correlation(test, res):
    groups = select(res, test.get("select", {}))
    pairs = []
    for g in groups:
        xs = [v for _, v in g.metric_values(test["x"])]
        ys = [v for _, v in g.metric_values(test["y"])]
        if xs and ys:
            pairs.append((float(np.mean(xs)), float(np.mean(ys))))
    if len(pairs) < 3:
        return None, f"{len(pairs)} configurations with both metrics; need 3", {}
    rho = _spearman([p[0] for p in pairs], [p[1] for p in pairs])
    return rho >= float(test["min"]), f"Spearman rho = {rho:.3f} over {len(pairs)} configurations", \
        {"value": rho, "n": len(pairs)}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a rate k/n."""
    from scipy.stats import beta

    alpha = 1 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _frequency(test, res):
    scale, unit = _units(test)
    better, worse = test.get("better", "test_acc_precise"), test.get("worse", "test_acc_ema")
    threshold = float(test["threshold"])
    count = total = 0
    for g in select(res, test["select"]):
        for t in g.by_seed.values():
            if t.outcome != "ok" or not t.summary:
                continue
            gaps = epoch_gaps(t.summary, better, worse)
            total += len(gaps)
            count += sum(1 for v in gaps.values() if v > threshold)
    if total == 0:
        return None, f"no run recorded {better} and {worse} per epoch", {}
    low, high = clopper_pearson(count, total, float(test.get("level", 0.95)))
    detail = (f"{count} of {total} (run, epoch) pairs gain more than {_fmt(threshold, scale, unit)} "
              f"(rate {count / total:.3f}, {100 * float(test.get('level', 0.95)):g}% CI [{low:.3f}, {high:.3f}])")
    return count >= int(test["min_count"]), detail, {"value": float(count), "low": low, "high": high, "n": total}


_EVALUATORS = {
    "difference": _difference, "mean_within": _mean_within, "range_less": _range_less,
    "argmin_between": _argmin_between, "argmin_ratio": _argmin_ratio, "extreme": _extreme, "rank": _rank,
    "correlation": _correlation, "frequency": _frequency,
}

