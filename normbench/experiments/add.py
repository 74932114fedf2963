"""`reproduce STUDY --add norm=NAME [norm.opt=...]`: a new norm through a committed study, beside its baselines.

    python -m normbench reproduce norm_leaderboard --add norm=my_pkg.layers:MyNorm norm.eps=1e-3 --plan
    python -m normbench reproduce norm_leaderboard --add norm=my_pkg.layers:MyNorm norm.eps=1e-3 \\
        [scale=...] [results_dir=DIR] [baselines=DIR] [work_dir=DIR] [sweep.n_workers=N]

The new arm is one more value of the norm dimension of every part whose grid compares norms (a `norm` key,
alone or linked with others such as the norms' options); the part's other dimensions (its protocols, batch
sizes...), its base, schedule, seeds and, when the part tunes per arm, its tuning (the same space, trials and
seeds) are the study's, unchanged, so only the new arm's runs are made (resumable Optuna studies under
`work_dir`, default runs/add/studies/). The baselines are the study's records at that scale under `baselines`
(default: the committed results/; at a scale with no committed records, such as `smoke`, the study's own arms
run first, into `results_dir`/baselines/, and the note says so). When every new run has finished,
`results_dir`/<study>-add-<arm>/ (default results_dir: runs/add/) gets the records (the baselines' lines, then
the new runs', numbered after them), and the study's tables, figures, claims, provenance and README regenerated
from them: the new rows beside the committed ones, paired by seed, the rank claims ranking the new arm among
the rest. `ADDED.md` (also at the top of the README) says which rows ran here and which come from the
baselines' records, with each one's code version and machine, and what the new runs cost. The baselines'
folder is never written to.

`--plan` says what would run and what it should cost (from the committed runs of the same protocol), and runs
nothing.
"""

from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.experiments.spec import CANONICAL_SCALE
from normbench.files import write_text_atomic

ADDED_NOTE = "ADDED.md"
ARM_KEY = "norm"


def parse_arm(texts: list[str]) -> dict[str, Any]:
    """The new arm from `norm=NAME norm.opt=VALUE ...` (override syntax), in the order given.

    Raises:
        ConfigError: a key other than norm / norm.*, or no norm=.
    """
    from normbench.overrides import parse

    arm: dict[str, Any] = {}
    for text in texts:
        ov = parse(text)
        if ov.prefix or not (ov.key == ARM_KEY or ov.key.startswith(ARM_KEY + ".")):
            raise ConfigError(f"--add takes norm=NAME and norm.<option>=VALUE, got '{text}'")
        arm[ov.key] = ov.value
    if ARM_KEY not in arm:
        raise ConfigError("--add needs norm=NAME: a built-in norm, an installed entry point or an import path "
                          "(--add norm=my_pkg.layers:MyNorm [norm.option=VALUE ...])")
    return {ARM_KEY: arm[ARM_KEY], **{k: v for k, v in arm.items() if k != ARM_KEY}}


def arm_label(arm: dict[str, Any]) -> str:
    """The arm as a command line writes it (`norm=pkg.mod:Cls norm.eps=0.001`)."""
    from normbench.overrides import format_value

    return " ".join(f"{k}={format_value(v)}" for k, v in arm.items())


@dataclass
class Addition:
    """A study with one more norm arm.

    Attributes:
        exp: the study with the new arm in the norm dimension of each part that has one (for tables, claims).
        runs: {part: the sweep spec that runs only the new arm (its own Optuna study)}.
        arm: the new arm's grid values.
        tag: the arm in folder and study names.
    """

    exp: Any
    runs: dict[str, Any]
    arm: dict[str, Any]
    tag: str
    others: list[str] = field(default_factory=list)  # parts without a norm dimension: their records as they are

    @property
    def folder_name(self) -> str:
        return f"{self.exp.results_name}-add-{self.tag}"


def extend(exp: Any, arm: dict[str, Any]) -> Addition:
    """The study with `arm` added to the norm dimension of every part that has one.

    Raises:
        ConfigError: no part compares norms, or the arm is already one of the study's.
    """
    from normbench.experiments.tuning import arm_key
    from normbench.sweep.plan import stable_hash
    from normbench.sweep.spec import UNSET, Dimension

    tag = arm_key(arm).replace(":", "-")
    tag = f"{tag}-{stable_hash(arm, 8)}" if len(arm) > 1 else tag  # options: the hash tells arms apart
    parts, runs, others = dict(exp.parts), {}, []
    for part, spec in exp.parts.items():
        at = next((i for i, d in enumerate(spec.grid) if ARM_KEY in d.keys), None)
        if at is None:
            others.append(part)
            continue
        dim = spec.grid[at]
        keys = tuple(dict.fromkeys([*dim.keys, *arm]))
        old = tuple(tuple(dict(zip(dim.keys, v, strict=True)).get(k, UNSET) for k in keys) for v in dim.values)
        new = tuple(arm.get(k, UNSET) for k in keys)
        if new in old:
            raise ConfigError(f"study {exp.name}, part {part}: the arm {arm_label(arm)} is already one of its arms")
        grid = list(spec.grid)
        grid[at] = Dimension(dim.label, keys, (*old, new))
        parts[part] = replace(spec, grid=grid)
        grid_new = list(spec.grid)
        grid_new[at] = Dimension(dim.label, tuple(arm), (tuple(arm.values()),))  # only the keys it sets
        name = f"{spec.name}-add-{tag}"
        runs[part] = replace(spec, grid=grid_new, name=name, study_name=name)
    if not runs:
        raise ConfigError(f"study {exp.name} compares no norms (no part has a norm dimension in its grid); --add "
                          "puts a new norm beside a study's norms")
    return Addition(replace(exp, parts=parts), runs, arm, tag, others)


# ---------------------------------------------------------------------------------------------- plan


def _cpu_s(summary: dict[str, Any]) -> float | None:
    wall = summary.get("wall_s")
    if not isinstance(wall, (int, float)):
        return None
    threads = (summary.get("config") or {}).get("trainer", {}).get("threads") or 1
    return float(wall) * int(threads)


def plan_text(add: Addition, baselines: dict[str, list[dict[str, Any]]]) -> str:
    """What the addition runs, per part and protocol, and its estimated cost from the baselines' runs."""
    exp = add.exp
    lines = [f"study {exp.name} (scale {exp.scale}) --add {arm_label(add.arm)}: only the new arm runs, under the "
             "study's protocol; the baselines are its records"]
    total_s, unknown = 0.0, 0
    for part, spec in add.runs.items():
        tuning = exp.tuning.get(part)
        combos = spec.grid_combinations()
        per_combo = len(spec.seeds) + (tuning.trials * len(tuning.seeds) if tuning else 0)
        tuned = f" + {tuning.trials} tuning configurations x {len(tuning.seeds)} seeds" if tuning else ""
        lines.append(f"part {part}: {len(combos)} configuration(s) x ({len(spec.seeds)} seeds {list(spec.seeds)}"
                     f"{tuned}) = {len(combos) * per_combo} runs")
        for combo in combos:
            others = {k: v for k, v in combo.items() if not (k == ARM_KEY or k.startswith(ARM_KEY + "."))}
            costs = [c for r in baselines[part] if r.get("summary")
                     and all(r["params"].get(k) == v for k, v in others.items())
                     and (c := _cpu_s(r["summary"])) is not None]
            shown = ", ".join(f"{k}={v}" for k, v in others.items()) or "the base"
            if costs:
                each = statistics.median(costs)
                total_s += each * per_combo
                lines.append(f"  {shown}: {per_combo:g} runs, ~{each:.0f} CPU-s each (median of {len(costs)} "
                             "committed runs of this protocol)")
            else:
                unknown += 1
                lines.append(f"  {shown}: {per_combo:g} runs, cost unknown (no committed run of this protocol)")
    cost = f"~{total_s / 3600:.2f} CPU-hours" + (" (plus the protocols of unknown cost)" if unknown else "")
    lines.append(f"estimated cost: {cost}; a new norm may be slower or faster than the baselines' median")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- run


def main(argv: list[str]) -> int:
    """`reproduce STUDY --add ...` (the command line of normbench.experiments.reproduce); the exit code."""
    from normbench.experiments.reproduce import parse
    from normbench.experiments.spec import load_experiment, repo_root

    args = parse(argv)
    if args.mode != "add":
        raise ConfigError("normbench.experiments.add.main runs `reproduce STUDY --add norm=...` only")
    exp = load_experiment(str(args.study), args.scale)
    arm = parse_arm(args.add or [])
    runs = repo_root() / "runs" / "add"
    return run_add(exp, arm, baselines_dir=args.baselines or repo_root() / "results",
                   results_dir=args.results_dir or runs, work_dir=args.work_dir or runs / "studies",
                   plan_only=args.add_plan, n_workers=args.n_workers, storage=args.storage,
                   own_baselines=args.baselines is None)


def baseline_rows(exp: Any, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The study's records by part under `folder` (ConfigError when they are not there)."""
    from normbench.experiments.records import read_records

    if not (folder / "records").is_dir():
        hint = ("" if exp.scale == "cpu" else f"; run `python -m normbench reproduce {exp.name} scale={exp.scale} "
                f"results_dir=DIR` first and pass baselines=DIR")
        raise ConfigError(f"--add needs the baselines of study {exp.name} at scale {exp.scale}: {folder}/records/ "
                          f"does not exist{hint}")
    return {part: read_records(folder / "records" / f"{part}.jsonl") for part in exp.parts}


def run_add(exp: Any, arm: dict[str, Any], *, baselines_dir: Path, results_dir: Path, work_dir: Path,
            plan_only: bool = False, n_workers: int = 1, storage: str | None = None,
            own_baselines: bool = False) -> int:
    """Plans (`plan_only`) or runs the new arm of study `exp` and writes the study with it; the exit code.

    With `own_baselines` (no baselines= given) at a scale whose records `baselines_dir` lacks, the study's own
    arms run first at that scale, into `results_dir`/baselines/ (resumable like the rest).
    """
    from normbench.experiments import tuning as tn
    from normbench.experiments.records import trial_line
    from normbench.experiments.reproduce import _finished_trials, generate, print_claims
    from normbench.results import storage_url
    from normbench.sweep.plan import make_plan
    from normbench.sweep.runner import describe, run_plan

    add = extend(exp, arm)
    source = baselines_dir / exp.results_name
    out = results_dir / add.folder_name
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ConfigError(f"results_dir={results_dir}: --add never writes into the baselines' folder {source}")
    run_baselines = own_baselines and exp.scale != CANONICAL_SCALE and not (source / "records").is_dir()
    if run_baselines:  # no committed records at this scale (smoke, ...): the study's own arms run here first
        source = results_dir / "baselines" / exp.results_name
        run_baselines = not (source / "records").is_dir()
    baselines = {part: [] for part in exp.parts} if run_baselines else baseline_rows(exp, source)
    overrides = [f"results_dir={work_dir}"]
    plans = {}
    for part, spec in add.runs.items():  # every new run composed and checked before anything runs
        spec.n_workers, spec.storage = n_workers, storage
        plan = make_plan(spec, overrides)
        if part in exp.tuning:
            tn.plan_arms(spec, exp.tuning[part], overrides, work_dir)
        plans[part] = (plan, storage_url(work_dir, spec.study, spec.storage))
    if plan_only:
        if run_baselines:
            print(f"study {exp.name} has no records at scale {exp.scale}: its {exp.trials_planned()} runs at that "
                  f"scale run first, into {source}")
        print(plan_text(add, baselines))
        return 0
    code = 0
    if run_baselines:
        from normbench.experiments.reproduce import Args, run

        print(f"study {exp.name} has no records at scale {exp.scale}: running its own arms first, into {source}",
              flush=True)
        code = run(exp, Args(mode="run", study=exp.name, scale=exp.scale, work_dir=work_dir, n_workers=n_workers,
                             storage=storage), source.parent)
        if not (source / "records").is_dir():
            return max(code, 1)
        baselines = baseline_rows(exp, source)
    for part, (plan, url) in plans.items():
        print(f"study {exp.name}, part {part}, new arm {arm_label(arm)}: {describe(plan, url)}", flush=True)
        if part in exp.tuning:
            code = max(code, tn.run_tuned_part(plan.spec, exp.tuning[part], overrides, work_dir,
                                               lambda text: print(text, flush=True)))
        else:
            code = max(code, run_plan(plan, url))
    rows: dict[str, list[dict[str, Any]]] = {}
    added: dict[str, list[dict[str, Any]]] = {}
    for part in exp.parts:
        rows[part] = list(baselines[part])
        if part not in add.runs:
            continue
        spec = add.runs[part]
        trials, missing = _finished_trials(spec, work_dir)
        if missing:
            print(f"study {exp.name}: part {part} has {missing} new point(s) not finished; rerun the same command to "
                  "resume. Nothing was written.", flush=True)
            return max(code, 1)
        offset = 1 + max((int(r["number"]) for r in baselines[part]), default=-1)
        new = [json.loads(trial_line(t)) for t in sorted(trials, key=lambda t: t.number)]
        for r in new:
            r["number"] = int(r["number"]) + offset  # after the baselines': one numbering per part
        added[part] = new
        rows[part] += new
    for part, part_rows in rows.items():
        lines = [json.dumps(r, sort_keys=True, separators=(",", ":"), allow_nan=False) for r in part_rows]
        write_text_atomic(out / "records" / f"{part}.jsonl", "".join(line + "\n" for line in lines))
    tuning_runs = [r for part in exp.tuning for r in _write_tuning(exp, add, part, source, out, overrides, work_dir)]
    written, claims = generate(add.exp, out, out)
    note = added_note(add, baselines, added, source, tuning_runs)
    written.append(write_text_atomic(out / ADDED_NOTE, note))
    readme = out / "README.md"
    write_text_atomic(readme, note + "\n" + readme.read_text())
    for path in written:
        print(f"wrote {path}")
    print_claims(claims)
    return code


def _write_tuning(exp: Any, add: Addition, part: str, source: Path, out: Path, overrides: list[str],
                  work_dir: Path) -> list[dict[str, Any]]:
    """records/<part>-tuning.jsonl: the baselines' tuning lines, then the new arm's (returned)."""
    from normbench.experiments import tuning as tn

    committed = tn.records_path(source, part)
    lines = committed.read_text().splitlines() if committed.is_file() else []
    new: list[dict[str, Any]] = []
    if part in add.runs:
        rows = tn.tuning_rows(add.runs[part], exp.tuning[part], overrides, work_dir) or {}
        new = [r for study_rows in rows.values() for r in study_rows]
        lines += [json.dumps(r, sort_keys=True, separators=(",", ":"), allow_nan=False) for r in new]
    write_text_atomic(tn.records_path(out, part), "".join(line + "\n" for line in lines if line.strip()))
    return new


def _origin(rows: list[dict[str, Any]]) -> str:
    """Code versions and machines of some records, in words."""
    shas = sorted({str((r.get("summary") or {}).get("git_sha") or "?")[:10] for r in rows})
    machines = sorted({f"{(s.get('machine') or {}).get('cpu_model', '?')}, {s.get('accelerator', '?')}"
                       for r in rows if (s := r.get("summary") or {})})
    days = sorted({str(r.get("datetime_complete") or "?")[:10] for r in rows})
    return (f"code {', '.join(shas)}; machine {'; '.join(machines) or '?'}; run "
            f"{days[0] if len(days) == 1 else f'{days[0]} to {days[-1]}'}")


def added_note(add: Addition, baselines: dict[str, list[dict[str, Any]]], added: dict[str, list[dict[str, Any]]],
               source: Path, tuning_runs: list[dict[str, Any]] | None = None) -> str:
    """ADDED.md: which rows ran here, which come from the committed records, and what the new runs cost (the
    new arm's tuning runs included)."""
    exp = add.exp
    new_rows = [r for rows in added.values() for r in rows]
    old_rows = [r for rows in baselines.values() for r in rows]
    tuning_runs = tuning_runs or []
    cpu = [c for r in [*new_rows, *tuning_runs] if r.get("summary") and (c := _cpu_s(r["summary"])) is not None]
    tuned = f" (+ {len(tuning_runs)} tuning runs)" if tuning_runs else ""
    seeds = sorted({s for spec in add.runs.values() for s in spec.seeds})
    command = (f"python -m normbench reproduce {exp.name} --add "
               + " ".join(shlex.quote(x) for x in arm_label(add.arm).split(" "))
               + (f" scale={exp.scale}" if exp.scale != "cpu" else ""))
    return "\n".join([
        f"> **Added arm `{arm_label(add.arm)}`** (`{command}`): its rows ran on this machine, under study "
        f"{exp.name}'s protocol (scale {exp.scale}), seeds {seeds}: the baselines' seeds, so every comparison "
        "pairs runs by seed.",
        f"> New rows: {len(new_rows)} runs in part(s) {', '.join(added)}{tuned}; {_origin(new_rows)}; cost "
        f"{sum(cpu) / 3600:.3f} CPU-hours ({sum(cpu):.0f} CPU-s, every new run).",
        f"> Every other row: the records of {source} ({len(old_rows)} runs); {_origin(old_rows)}.",
        "> Claims that rank or pick among all arms now include the new one; the others compare the same "
        "baselines as the committed study.",
        "",
    ])
