"""Per-arm tuning of a study part's nuisance hyperparameters (the Deep Learning Tuning Playbook's rule).

A part that compares values of scientific hyperparameters (its grid: the norm, the batch) may declare

    tuning:
      space: {optim.lr: {type: float, low: 0.01, high: 3.0, log: true}}   # optim.lr at least, on a log scale
      trials: 6                 # configurations per arm: the same budget for every arm
      sampler: qmc              # qmc (scrambled Sobol, normbench.sweep.qmc) | tpe | random
      sampler_seed: 0
      seeds: [100]              # training seeds while tuning (each configuration runs every one)
      objective: val_acc        # a validation metric; never the test set
      val_fraction: 0.1         # the validation split carved from the training set (or data.val_fraction in base)
      pruner: none              # none | median | successive_halving | hyperband (+ pruner_options)

Each arm (a grid cell without the seed) is tuned in its own Optuna study, `<part's study>-tune-<arm key>`,
run by the sweep machinery as a search (workers, storage, resume and exactly-once as for any sweep). Once
every arm's tuning has finished, the part's own seeds run at each arm's best configuration (best mean
objective over the tuning seeds; ties go to the smaller values, compared key by key) and are evaluated on
the test set like any grid point, in the part's own study. The validation split stays carved out in the
final runs: they train on exactly the samples the tuning trained on. Every final run's record says what
tuning chose (`tuned`, `tuning_trials`, `tuning_study`); the tuning trials are exported to
results/<study>/records/<part>-tuning.jsonl, and the report (normbench.experiments.tuning_report) is
regenerated from them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError

TUNING_KEYS = ("space", "trials", "sampler", "sampler_seed", "sampler_options", "seeds", "objective", "direction",
               "val_fraction", "pruner", "pruner_options")
SAMPLERS = ("qmc", "tpe", "random")
REQUIRED_KEY = "optim.lr"  # the nuisance hyperparameter every tuning searches
TUNE_INFIX = "-tune-"
RECORDS_SUFFIX = "-tuning"  # records/<part>-tuning.jsonl


@dataclass
class Tuning:
    """A validated `tuning:` block of one study part."""

    raw: dict[str, Any]  # the sweep settings of every arm's search (space, sampler, n_configs, seeds, ...)
    trials: int
    objective: str
    direction: str
    seeds: list[int]
    space_keys: list[str] = field(default_factory=list)  # the searched keys, as declared

    @property
    def curve_key(self) -> str:
        """The key the tuning curve is drawn against (optim.lr)."""
        return REQUIRED_KEY


def _fail(study: str, part: str, msg: str) -> ConfigError:
    return ConfigError(f"study {study}: part '{part}': tuning: {msg}")


def parse_tuning(study: str, part: str, raw: Any, base: Mapping[str, Any], grid: Any) -> tuple[Tuning, float | None]:
    """Validates a part's `tuning:` block; returns it and the validation fraction to set in the part's base
    (None: the base's own data.val_fraction). Every problem is one ConfigError line naming the key."""
    from normbench.record import BY_NAME
    from normbench.sweep.spec import parse_spec

    if not isinstance(raw, Mapping):
        raise _fail(study, part, f"must be a mapping with {', '.join(TUNING_KEYS)}, got {raw!r}")
    for key in raw:
        if key not in TUNING_KEYS:
            raise _fail(study, part, f"unknown key '{key}'; accepted: {', '.join(TUNING_KEYS)}")
    trials = raw.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise _fail(study, part, f"trials (configurations per arm, the same for every arm) must be an integer >= 1, "
                                 f"got {trials!r}")
    sampler = raw.get("sampler", "qmc")
    if sampler not in SAMPLERS:
        raise _fail(study, part, f"sampler {sampler!r} is not accepted; accepted: {', '.join(SAMPLERS)}")
    objective = raw.get("objective", "val_acc")
    spec_field = BY_NAME.get(str(objective))
    if not isinstance(objective, str) or objective.startswith("test_") or (spec_field and spec_field.test_set):
        raise _fail(study, part, f"objective {objective!r} is measured on the test set, which must never choose a "
                                 "setting; accepted: a validation metric (val_acc, val_loss)")
    if not objective.startswith("val_"):
        raise _fail(study, part, f"objective {objective!r} is not measured on the validation split; accepted: "
                                 "val_acc, val_loss")
    direction = raw.get("direction", "minimize" if objective.endswith("loss") else "maximize")
    space = raw.get("space")
    if not isinstance(space, Mapping) or REQUIRED_KEY not in space:
        raise _fail(study, part, f"space must search {REQUIRED_KEY} (e.g. {{{REQUIRED_KEY}: {{type: float, low: 0.01, "
                                 f"high: 3.0, log: true}}}}), got {space!r}")
    lr = space[REQUIRED_KEY]
    if not isinstance(lr, Mapping) or lr.get("type") != "float" or lr.get("log") is not True:
        raise _fail(study, part, f"space.{REQUIRED_KEY} must be a float distribution on a log scale "
                                 f"({{type: float, low: ..., high: ..., log: true}}), got {lr!r}")
    swept = {k for k in (grid or {})} | {k for v in (grid or {}).values() if isinstance(v, list)
                                         for item in v if isinstance(item, Mapping) for k in item}
    for key in space:
        if key in swept:
            raise _fail(study, part, f"'{key}' is both swept by the part's grid and tuned; tune nuisance "
                                     "hyperparameters only")
    val_fraction = raw.get("val_fraction")
    base_fraction = base.get("data.val_fraction")
    if val_fraction is not None:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise _fail(study, part, f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
        if base_fraction is not None and base_fraction != val_fraction:
            raise _fail(study, part, f"val_fraction {val_fraction} differs from the base's data.val_fraction "
                                     f"{base_fraction}; give one")
    elif not (isinstance(base_fraction, (int, float)) and base_fraction > 0):
        raise _fail(study, part, "the objective needs a validation split carved from the training set; set "
                                 "tuning.val_fraction (e.g. 0.1) or data.val_fraction > 0 in the part's base")
    settings = {"space": dict(space), "sampler": sampler, "sampler_seed": raw.get("sampler_seed", 0),
                "seeds": raw.get("seeds", [0]), "n_configs": trials, "objective": objective,
                "direction": direction, "pruner": raw.get("pruner", "none")}
    for key in ("sampler_options", "pruner_options"):
        if key in raw:
            settings[key] = raw[key]
    try:  # the sweep machinery's own checks (distributions, seeds, sampler and pruner options, direction)
        probe = parse_spec(f"{part}{TUNE_INFIX}probe", settings)
    except ConfigError as e:
        raise _fail(study, part, str(e).split(": ", 1)[-1]) from None
    tuning = Tuning(raw=settings, trials=trials, objective=objective, direction=probe.direction,
                    seeds=list(probe.seeds), space_keys=[s.key for s in probe.space])
    return tuning, (float(val_fraction) if val_fraction is not None else None)


# ---------------------------------------------------------------------------------------------- arms


def arm_key(arm: Mapping[str, Any]) -> str:
    """A stable, readable name for an arm (its grid values, e.g. `bn` or `gn_32`)."""
    if not arm:
        return "all"
    text = "_".join(re.sub(r"[^\w.]+", "-", str(v)).strip("-") or "x" for v in arm.values())
    return text[:60]


def arm_keys(arms: list[dict[str, Any]]) -> list[str]:
    """One key per arm; a readable key shared by two arms gets the arm's hash appended."""
    from normbench.sweep.plan import stable_hash

    keys = [arm_key(a) for a in arms]
    return [k if keys.count(k) == 1 else f"{k}-{stable_hash(a, 8)}" for k, a in zip(keys, arms, strict=True)]


def tuning_study_name(part_study: str, key: str) -> str:
    return f"{part_study}{TUNE_INFIX}{key}"


def arm_spec(spec: Any, tuning: Tuning, arm: dict[str, Any], study: str) -> Any:
    """The search that tunes one arm: the part's base and the arm's grid values fixed, the tuning's space searched,
    run settings (workers, storage, max_trials) as the part's."""
    from normbench.sweep.spec import parse_spec

    raw = {**tuning.raw, "description": f"per-arm tuning of {spec.name}: {arm_key(arm)}",
           "base": {k: v for k, v in spec.base.items() if k not in tuning.space_keys},
           "grid": {k: [v] for k, v in arm.items()}}
    if spec.lr_scaling:
        raw["lr_scaling"] = dict(spec.lr_scaling)
    out = parse_spec(study, raw, spec.path)
    out.n_workers, out.storage, out.max_trials = spec.n_workers, spec.storage, spec.max_trials
    return out


def final_spec(spec: Any, arms: list[dict[str, Any]], chosen: list[dict[str, Any]]) -> Any:
    """The part's grid with each arm's tuned values linked to it (one linked dimension `arm`)."""
    from normbench.sweep.spec import UNSET, Dimension

    keys = tuple(dict.fromkeys([*(k for a in arms for k in a), *(k for c in chosen for k in c)]))
    values = tuple(tuple({**a, **c}.get(k, UNSET) for k in keys) for a, c in zip(arms, chosen, strict=True))
    tuned = {k for c in chosen for k in c}
    return replace(spec, grid=[Dimension("arm", keys, values)],
                   base={k: v for k, v in spec.base.items() if k not in tuned})


# ---------------------------------------------------------------------------------------------- choosing


def config_rows(rows: list[dict[str, Any]], tuning: Tuning) -> list[dict[str, Any]]:
    """The configurations an arm's tuning tried, in order of their first trial: {params (searched keys), value
    (mean objective over the seeds; None unless every seed completed), seeds, states}."""
    configs: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: int(r["number"])):
        params = r.get("params") or {}
        searched = {k: params.get(k) for k in tuning.space_keys}
        entry = configs.setdefault(json.dumps(searched, sort_keys=True),
                                   {"params": searched, "values": [], "states": []})
        entry["states"].append(r["state"])
        value = (r.get("summary") or {}).get(tuning.objective) if r["state"] == "COMPLETE" else None
        entry["values"].append(value if isinstance(value, (int, float)) and math.isfinite(value) else None)
    out = []
    for entry in configs.values():
        values = entry.pop("values")
        complete = len(values) == len(tuning.seeds) and all(v is not None for v in values)
        out.append({**entry, "value": sum(values) / len(values) if complete else None, "n": len(values)})
    return out


def best_config(configs: list[dict[str, Any]], tuning: Tuning) -> dict[str, Any] | None:
    """The configuration with the best mean objective; ties go to the smaller values (key by key, as listed in
    the space), so the choice does not depend on trial numbers or workers. None when none completed."""
    done = [c for c in configs if c["value"] is not None]
    if not done:
        return None
    sign = -1.0 if tuning.direction == "maximize" else 1.0
    return min(done, key=lambda c: (sign * c["value"], [_order(c["params"][k]) for k in tuning.space_keys]))


def _order(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else (1, 0.0, json.dumps(value))


def trial_rows(trials: list[Any], study: str) -> list[dict[str, Any]]:
    """Optuna trials as record rows (normbench.experiments.records), each naming its study; re-queued originals
    left out."""
    from normbench.experiments.records import trial_line
    from normbench.sweep.study import final_trials

    return [{**json.loads(trial_line(t)), "study": study} for t in sorted(final_trials(trials), key=lambda t: t.number)]


# ---------------------------------------------------------------------------------------------- running


@dataclass
class ArmRun:
    arm: dict[str, Any]
    key: str
    plan: Any
    url: str


def plan_arms(spec: Any, tuning: Tuning, run_overrides: list[str], work: Path) -> tuple[Any, list[ArmRun]]:
    """Composes and checks the part and every arm's search before anything runs."""
    from normbench.results import storage_url
    from normbench.sweep.plan import make_plan

    part_plan = make_plan(spec, run_overrides)  # the arms as canonical grid values (aliases resolved)
    arms = [dict(c) for c in part_plan.combos]
    runs = []
    for arm, key in zip(arms, arm_keys(arms), strict=True):
        name = tuning_study_name(spec.study, key)
        aspec = arm_spec(spec, tuning, arm, name)
        runs.append(ArmRun(arm, key, make_plan(aspec, run_overrides), storage_url(work, name, spec.storage)))
    return part_plan, runs


def _load_trials(url: str, study: str) -> list[Any] | None:
    import optuna

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return None
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return None


def arm_finished(run: ArmRun) -> tuple[list[Any], bool]:
    """The arm's tuning trials and whether its search has finished (every configuration and seed ended)."""
    from normbench.sweep.progress import count

    trials = _load_trials(run.url, run.plan.spec.study)
    if trials is None:
        return [], False
    c = count(run.plan, trials)
    return trials, c.done >= c.total and c.running == 0


def finished_rows(runs: list[ArmRun]) -> dict[str, list[dict[str, Any]]] | None:
    """Every arm's tuning trials as record rows by arm study, or None while an arm's tuning has not finished."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        trials, done = arm_finished(run)
        if not done:
            return None
        rows[run.plan.spec.study] = trial_rows(trials, run.plan.spec.study)
    return rows


def tuning_rows(spec: Any, tuning: Tuning, run_overrides: list[str],
                work: Path) -> dict[str, list[dict[str, Any]]] | None:
    """The part's finished tuning as record rows by arm study (None: not finished)."""
    return finished_rows(plan_arms(spec, tuning, run_overrides, work)[1])


def run_tuned_part(spec: Any, tuning: Tuning, run_overrides: list[str], work: Path, say: Any = print) -> int:
    """Tunes every arm (resumable), then runs the part's seeds at each arm's choice; returns the exit code."""
    from normbench.results import storage_url
    from normbench.sweep.plan import config_id, make_plan
    from normbench.sweep.runner import run_plan

    _, runs = plan_arms(spec, tuning, run_overrides, work)
    code = 0
    for run in runs:
        say(f"{spec.name}: tuning arm {run.key} ({tuning.trials} configurations)")
        code = max(code, run_plan(run.plan, run.url))
    rows = finished_rows(runs)
    if rows is None:
        say(f"part {spec.name}: the per-arm tuning has not finished; rerun the same command to resume")
        return max(code, 1)
    chosen, fields = [], []
    for run in runs:
        study = run.plan.spec.study
        configs = config_rows(rows[study], tuning)
        best = best_config(configs, tuning)
        if best is None:
            raise ConfigError(f"part {spec.name}: no configuration of arm {run.key}'s tuning completed (study "
                              f"{study}); there is no setting to run the final seeds at")
        chosen.append(best["params"])
        fields.append({"tuned": best["params"], "tuning_trials": len(configs), "tuning_study": study})
        shown = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        say(f"arm {run.key}: tuning chose {shown} ({tuning.objective} {best['value']:.4f}, the best of "
            f"{len(configs)} configurations)")
    fspec = final_spec(spec, [r.arm for r in runs], chosen)
    plan = make_plan(fspec, run_overrides)
    for combo in plan.combos:
        i = next(i for i, r in enumerate(runs) if all(combo.get(k) == v for k, v in r.arm.items()))
        plan.record_fields[config_id(combo)] = fields[i]
    return max(code, run_plan(plan, storage_url(work, fspec.study, fspec.storage)))


def write_tuning_records(path: Path, rows: dict[str, list[dict[str, Any]]]) -> Path:
    """records/<part>-tuning.jsonl: every arm's tuning trials, arm after arm, by trial number."""
    from normbench.files import write_text_atomic

    lines = [json.dumps(r, sort_keys=True, separators=(",", ":"), allow_nan=False)
             for study_rows in rows.values() for r in study_rows]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def records_path(folder: Path, part: str) -> Path:
    return folder / "records" / f"{part}{RECORDS_SUFFIX}.jsonl"
