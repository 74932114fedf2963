"""`reproduce STUDY --plan [scale=...]`: what a study will run and whether its seeds can decide its claims.

Nothing is trained. For every part: its configurations, seeds and runs (tuning runs included), and the
CPU-hours estimated from the wall time of committed records of the same configurations (same training config,
normbench.experiments.overlap), or, where none matches, from training steps measured on this machine
(normbench.experiments.cost), scaled by committed runs of the same model and dataset. For every tested claim
(normbench.experiments.familywise): the seed-to-seed spread, estimated from

  1. committed arms: records (this study's own first, else another study's) of exactly the claim's
     configurations, paired by seed when both sides have >= 2 shared seeds (the sd of the per-seed difference),
     else unpaired (sd_d = sqrt(sd_a^2 + sd_b^2)); or
  2. the pooled spread of the same model and dataset: the root mean of the per-configuration variances of the
     metric over every committed configuration of that model and dataset (sd_d = sqrt(2) x pooled sd, no
     pairing assumed);

and the smallest effect the planned n seeds can resolve at the study's alpha after Holm, with power 0.8, in
the paired-t approximation (df = n - 1; alpha' = alpha / m, Holm's first and strictest step over the m
tested claims, so the figure is conservative for every claim):

    directional (greater, less):  delta = margin + (t[1 - alpha', n-1] + t[power, n-1]) * sd_d / sqrt(n)
    extreme, rank (at most r):    the directional delta at alpha' / r, with the median sd_d of the pairwise
                                  differences between the selection and the others (the gap to each one it
                                  must beat)
    non-inferiority (not_less, not_greater), true difference 0:
                                  margin_needed = (t[1 - alpha', n-1] + t[power, n-1]) * sd_d / sqrt(n)
    equivalence (TOST), true difference 0:
                                  margin_needed = (t[1 - alpha', n-1] + t[1 - (1 - power) / 2, n-1]) * sd_d / sqrt(n)
    mean_within [low, high], true mean at the centre:
                                  half_width_needed = the equivalence formula with sd of the values
    correlation over k configurations (Fisher z, Spearman's variance 1.06 / (k - 3)):
                                  rho_min = tanh((z[1 - alpha'] + z[power]) * sqrt(1.06 / (k - 3)))

A claim whose declared margin (or interval half-width) is below what n seeds need is flagged
"UNDECIDABLE at n=...": no outcome of the planned runs could let it hold at the power asked. Directional
claims declare no effect size; their line says which effect they can detect. Descriptive claims are listed
as such. Runs that another committed study also holds are warned about (normbench.experiments.overlap).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

POWER = 0.8


@dataclass
class Spread:
    """A seed-to-seed standard deviation and where it came from."""

    sd: float
    source: str


def _t(p: float, df: float) -> float:
    from normbench.report.stats import t_quantile

    return t_quantile(p, df)


def needed(sd: float, n: int, alpha: float, power: float, two_sided_power: bool) -> float:
    """(t[1 - alpha, n-1] + t[power or 1 - (1 - power)/2, n-1]) * sd / sqrt(n): the resolvable effect or margin."""
    beta_q = 1 - (1 - power) / 2 if two_sided_power else power
    return (_t(1 - alpha, n - 1) + _t(beta_q, n - 1)) * sd / math.sqrt(n)


def rho_min(k: int, alpha: float, power: float) -> float | None:
    """Smallest Spearman rho over k configurations detectable at one-sided alpha with `power` (Fisher z)."""
    from scipy.stats import norm

    if k <= 3:
        return None
    return math.tanh((norm.ppf(1 - alpha) + norm.ppf(power)) * math.sqrt(1.06 / (k - 3)))


# ---------------------------------------------------------------------------------------------- planned configs


@dataclass
class Planned:
    """One configuration of a part: its grid values, its training config and the committed runs that match it."""

    part: str
    combo: dict[str, Any]
    config: dict[str, Any]
    matched: list[Any]
    cfg: Any = None  # the composed run config (a DictConfig), for measuring its cost (experiments.cost)


def planned_configs(exp: Any, runs: list[Any]) -> dict[str, list[Planned]]:
    """Every part's configurations, composed as the run would, with the committed runs of each."""
    from omegaconf import OmegaConf

    from normbench.experiments.overlap import same_training, training_config
    from normbench.sweep.plan import make_plan

    out: dict[str, list[Planned]] = {}
    for part, spec in exp.parts.items():
        plan = make_plan(spec, [])
        rows = []
        for combo in plan.combos:
            cfg, _ = plan.composer.compose({**combo, "seed": spec.seeds[0]})
            container = OmegaConf.to_container(cfg, resolve=True)
            assert isinstance(container, dict)  # a DictConfig's container
            config = training_config(cast(dict[str, Any], container))
            matched = [r for r in runs if same_training(config, r.config)]
            # this study's own records first: they are the pilot of exactly this protocol
            matched.sort(key=lambda r: (r.study != exp.name, r.study, r.part, r.seed))
            rows.append(Planned(part, dict(combo), config, matched, cfg))
        out[part] = rows
    return out


def _select(rows: list[Planned], selector: Mapping[str, Any]) -> list[Planned]:
    from normbench.experiments.protocols import matches_combo

    return [p for p in rows if matches_combo(p.combo, selector)]


# ---------------------------------------------------------------------------------------------- spreads


def _values(runs: list[Any], metric: str) -> dict[tuple[str, str], dict[int, float]]:
    from normbench.report.metrics import metric_value

    out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in runs:
        v = metric_value(r.summary, metric)
        if v is not None and math.isfinite(v):
            out[(r.study, r.part)].setdefault(r.seed, v)
    return out


def _sd(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def pooled_spread(runs: list[Any], config: Mapping[str, Any], metric: str) -> Spread | None:
    """The root mean per-configuration variance of `metric` over committed configurations of the same model
    and dataset (configurations: one study part's runs grouped by training config)."""
    from normbench.report.metrics import metric_value

    model, data = config.get("model.name"), config.get("data.name")
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for r in runs:
        if r.config.get("model.name") != model or r.config.get("data.name") != data:
            continue
        v = metric_value(r.summary, metric)
        if v is None or not math.isfinite(v):
            continue
        key = (r.study, r.part, tuple(sorted((k, repr(x)) for k, x in r.config.items())))
        groups[key].append(v)
    variances = [float(np.var(v, ddof=1)) for v in groups.values() if len(v) >= 2]
    if not variances:
        return None
    return Spread(math.sqrt(float(np.mean(variances))),
                  f"pooled over {len(variances)} committed configurations of {model} on {data}")


def one_spread(p: Planned, metric: str, runs: list[Any]) -> Spread | None:
    """The sd of one configuration's metric over seeds."""
    for (study, part), vals in _values(p.matched, metric).items():
        sd = _sd(list(vals.values()))
        if sd is not None:
            return Spread(sd, f"committed arm {study}/{part} ({len(vals)} seeds)")
    return pooled_spread(runs, p.config, metric)


def difference_spread(a: Planned, b: Planned, metric_a: str, metric_b: str, runs: list[Any]) -> Spread | None:
    """The sd of the per-seed difference a - b (see the module docstring for the sources, in order)."""
    va, vb = _values(a.matched, metric_a), _values(b.matched, metric_b)
    for key in [k for k in va if k in vb] + [k for k in vb if k not in va]:
        if key not in va:
            continue
        shared = sorted(set(va[key]) & set(vb[key]))
        sd = _sd([va[key][s] - vb[key][s] for s in shared])
        if sd is not None:
            return Spread(sd, f"committed arms {key[0]}/{key[1]}, paired over {len(shared)} seeds")
    sa, sb = one_spread(a, metric_a, runs), one_spread(b, metric_b, runs)
    if sa is not None and sb is not None:
        if sa.source.startswith("pooled") and sb.source.startswith("pooled"):
            return Spread(math.sqrt(sa.sd ** 2 + sb.sd ** 2), sa.source + ", unpaired")
        return Spread(math.sqrt(sa.sd ** 2 + sb.sd ** 2), f"{sa.source} and {sb.source}, unpaired")
    return None


# ---------------------------------------------------------------------------------------------- claims


def claim_line(claim: dict[str, Any], rows: list[Planned], n: int, alpha: float, runs: list[Any]) -> str:
    """One claim's plan: spread, source, the resolvable effect or margin, and UNDECIDABLE when flagged."""
    from normbench.experiments.claims import _fmt, _units
    from normbench.experiments.familywise import is_tested

    test = claim["test"]
    kind = test["kind"]
    head = f"claim {claim['id']} ({kind}"
    if not is_tested(test):
        return f"{head}): descriptive (no test): not part of the Holm family, no power to plan"
    scale, unit = _units(test)

    def f(x: float) -> str:
        return _fmt(x, scale, unit)

    if kind == "correlation":
        k = len(_select(rows, test.get("select", {})))
        r = rho_min(k, alpha, POWER)
        if r is None:
            return f"{head}): {k} configurations: too few for a test (needs 4): UNDECIDABLE at k={k}"
        return (f"{head}, rho >= {test['min']:g}): over k = {k} configurations resolves rho >= {r:.2f} "
                f"(Fisher z, one-sided alpha' = {alpha:.3g}, power {POWER:g})")
    if kind in ("extreme", "rank"):
        sel, among = _select(rows, test["select"]), _select(rows, test["among"])
        others = [q for q in among if len(sel) != 1 or q is not sel[0]]
        r = 1 if kind == "extreme" else int(test["at_most"])
        head += ")" if kind == "extreme" else f", at most {r} of {len(others) + 1})"
        if len(sel) != 1 or not others:
            return f"{head}: the selection does not name one configuration among others"
        spreads = [sp for q in others if (sp := difference_spread(sel[0], q, test["metric"], test["metric"], runs))]
        if not spreads:
            return f"{head}: n={n}, seed spread unknown (no committed runs of this model and data): run a pilot"
        sd = float(np.median([sp.sd for sp in spreads]))
        delta = needed(sd, n, alpha / r, POWER, False)
        return (f"{head}: n={n}, median seed sd of the pairwise differences {f(sd)} ({spreads[0].source}, ...); "
                f"resolves a gap of at least {f(delta)} to each configuration it must beat")
    if kind == "mean_within":
        sel = _select(rows, test["select"])
        spread = one_spread(sel[0], test["metric"], runs) if len(sel) == 1 else None
        lo, hi = float(test["low"]), float(test["high"])
        head += f", [{_fmt(lo, scale, '')}, {f(hi)}])"
        if spread is None:
            return f"{head}: n={n}, seed spread unknown (no committed runs of this model and data): run a pilot"
        need = needed(spread.sd, n, alpha, POWER, True)
        verdict = f"UNDECIDABLE at n={n}: " if (hi - lo) / 2 < need else ""
        return (f"{head}: {verdict}n={n}, seed sd {f(spread.sd)} ({spread.source}); the interval's half-width "
                f"{f((hi - lo) / 2)} must be >= {f(need)} to hold for a mean at its centre")
    # difference
    a, b = _select(rows, test["a"]), _select(rows, test["b"])
    expect, margin = test["expect"], float(test.get("margin", 0.0))
    head += f", {expect}" + (f" ±{f(margin)}" if margin else "") + ")"
    if len(a) != 1 or len(b) != 1:
        return f"{head}: the selections do not name one configuration each"
    spread = difference_spread(a[0], b[0], test["metric"], test.get("metric_b", test["metric"]), runs)
    if spread is None:
        return f"{head}: n={n}, seed spread unknown (no committed runs of this model and data): run a pilot"
    base = f"n={n}, seed sd of the difference {f(spread.sd)} ({spread.source})"
    if expect in ("greater", "less"):
        delta = margin + needed(spread.sd, n, alpha, POWER, False)
        return f"{head}: {base}; resolves a true difference of at least {f(delta)} in the declared direction"
    need = needed(spread.sd, n, alpha, POWER, expect == "equivalent")
    what = "an equivalence margin" if expect == "equivalent" else "a non-inferiority margin"
    verdict = f"UNDECIDABLE at n={n}: " if margin < need else ""
    return f"{head}: {verdict}{base}; needs {what} of at least ±{f(need)} (declared ±{f(margin)})"


# ---------------------------------------------------------------------------------------------- cost


def committed_hours(p: Planned) -> float | None:
    """CPU-hours of one run of `p` from its committed records (one source: this study's own runs first;
    another study's runs of the same training config may measure more and take longer), or None."""
    if not p.matched:
        return None
    first = (p.matched[0].study, p.matched[0].part)
    costs = [float(r.summary["wall_s"]) * int(r.config.get("trainer.threads") or 1) / 3600
             for r in p.matched if (r.study, r.part) == first and isinstance(r.summary.get("wall_s"), (int, float))]
    return float(np.mean(costs)) if costs else None


@dataclass
class PartCost:
    """A part's estimated CPU-hours and how they were obtained."""

    final_hours: float
    tuning_hours: float
    committed: int  # configurations costed from committed records
    measured: int  # configurations measured here (experiments.cost)
    calibration: str  # how the measured ones were scaled

    def text(self, n_configs: int) -> str:
        total = self.final_hours + self.tuning_hours
        how = []
        if self.committed:
            how.append(f"committed runs of {self.committed} of {n_configs} configurations")
        if self.measured:
            how.append(f"training steps measured on this machine for {self.measured} ({self.calibration})")
        tuning = (f" ({self.final_hours:.2f} final runs + {self.tuning_hours:.2f} tuning, without pruning)"
                  if self.tuning_hours else "")
        return f"{total:.2f} CPU-hours estimated{tuning} from " + " and ".join(how)


def part_costs(rows: list[Planned], seeds: int, tuning_runs_per_config: int = 0, runs: list[Any] | None = None,
               cost_model: Any = None) -> PartCost:
    """CPU-hours of a part: committed wall time where records of the configuration exist, else measured here
    (normbench.experiments.cost), scaled by the median committed/measured ratio over up to 3 committed
    configurations (any study's) of the same model and dataset."""
    from normbench.experiments.cost import CostModel, cpu_hours

    model = cost_model or CostModel()
    per_config: list[float | None] = [committed_hours(p) for p in rows]
    committed = sum(1 for h in per_config if h is not None)
    unknown = [i for i, h in enumerate(per_config) if h is None and rows[i].cfg is not None]
    calibration = "uncalibrated: no committed run of this model and dataset"
    if unknown:
        ratio = calibration_ratio(model, {(rows[i].config.get("model.name"), rows[i].config.get("data.name"))
                                          for i in unknown}, runs or [])
        if ratio is not None:
            calibration = f"scaled x{ratio[0]:.2f}, calibrated by {ratio[1]} committed configurations"
        for i in unknown:
            per_config[i] = cpu_hours(model.run_seconds(rows[i].cfg), rows[i].cfg) * (ratio[0] if ratio else 1.0)
    costed = [h for h in per_config if h is not None]
    return PartCost(sum(costed) * seeds, sum(costed) * tuning_runs_per_config, committed, len(unknown), calibration)


def calibration_ratio(model: Any, workloads: set[tuple], runs: list[Any], most: int = 3) -> tuple[float, int] | None:
    """Median of committed CPU-hours / this machine's estimate over up to `most` distinct committed training
    configurations of the given (model, dataset) workloads (each configuration's median over its runs, so one
    run slowed by a busy machine does not set the scale), and how many; None when there are none."""
    from normbench.config import from_mapping
    from normbench.experiments.cost import cpu_hours

    groups: list[tuple[dict[str, Any], list[Any]]] = []
    for r in runs:
        if (r.config.get("model.name"), r.config.get("data.name")) not in workloads:
            continue
        if not isinstance(r.summary.get("wall_s"), (int, float)) or not isinstance(r.summary.get("config"), dict):
            continue
        for config, members in groups:
            if config == r.config:
                members.append(r)
                break
        else:
            groups.append((r.config, [r]))
    # the configurations with the most runs first: their median is the steadiest
    groups.sort(key=lambda g: -len(g[1]))
    ratios = []
    for config, members in groups:
        hours = float(np.median([float(r.summary["wall_s"]) * int(config.get("trainer.threads") or 1) / 3600
                                 for r in members]))
        try:
            cfg = from_mapping(members[0].summary["config"])
            estimate = cpu_hours(model.run_seconds(cfg), cfg)
        except Exception:  # noqa: BLE001 - a record this code can no longer compose does not calibrate
            continue
        if estimate > 0:
            ratios.append(hours / estimate)
        if len(ratios) >= most:
            break
    return (float(np.median(ratios)), len(ratios)) if ratios else None


def part_cost(rows: list[Planned], seeds: int, tuning_runs_per_config: int = 0, runs: list[Any] | None = None,
              cost_model: Any = None) -> str:
    """The part's cost line (see part_costs)."""
    cost = part_costs(rows, seeds, tuning_runs_per_config, runs, cost_model)
    if not cost.committed and not cost.measured:
        return "CPU-hours unknown (no committed run of these configurations)"
    return cost.text(len(rows))


def render_plan(exp: Any, results_dir: Path) -> str:
    """The whole plan as text (see the module docstring)."""
    from normbench.experiments.familywise import DEFAULT_ALPHA, is_tested
    from normbench.experiments.overlap import committed_runs, find_overlaps

    runs = committed_runs(results_dir)
    rows = planned_configs(exp, runs)
    alpha = float(getattr(exp, "alpha", None) or DEFAULT_ALPHA)
    m = sum(1 for c in exp.claims if is_tested(c["test"]))
    step = alpha / max(m, 1)
    lines = [f"study {exp.name} (scale {exp.scale}): {exp.trials_planned()} runs planned; claims at alpha {alpha:g}, "
             f"Holm over m = {m} tested claims (planned at its strictest step, alpha/m = {step:.3g}), power "
             f"{POWER:g}"]
    from normbench.experiments.cost import CostModel

    cost_model = CostModel()
    for part, spec in exp.parts.items():
        grid = " x ".join(f"{d.label} ({len(d.values)})" for d in spec.grid) or "one configuration"
        tuning = exp.tuning.get(part)
        tuning_runs = tuning.trials * len(tuning.seeds) if tuning is not None else 0
        tuned = f" + {len(rows[part]) * tuning_runs} tuning runs" if tuning_runs else ""
        lines.append(f"part {part}: {grid} x {len(spec.seeds)} seeds = {len(rows[part]) * len(spec.seeds)} runs"
                     f"{tuned}; {part_cost(rows[part], len(spec.seeds), tuning_runs, runs, cost_model)}")
        for p in rows[part]:
            shown = ", ".join(f"{k}={v}" for k, v in p.combo.items()) or "the base"
            lines.append(f"  {shown}: {len(spec.seeds)} runs ({len(p.matched)} committed runs of this config)")
    for claim in exp.claims:
        part = claim["test"]["part"]
        lines.append(claim_line(claim, rows[part], len(exp.parts[part].seeds), step, runs))
    lines += [o.warning() for o in find_overlaps(runs, exp.results_name)]
    return "\n".join(lines)
