"""`python -m normbench reproduce`: run a study, or check its committed results, or list the studies.

    python -m normbench reproduce --list
    python -m normbench reproduce STUDY [sweep.n_workers=N] [sweep.storage=URL] [sweep.max_trials=N]
                                        [part=NAME] [scale=cpu|smoke|full|...] [results_dir=DIR] [work_dir=DIR]
    python -m normbench reproduce STUDY --check
    python -m normbench reproduce STUDY --regenerate
    python -m normbench reproduce STUDY --plan [scale=...]
    python -m normbench reproduce STUDY --replay [N] [trial=PART:NUMBER,...] [work_dir=DIR]
    python -m normbench reproduce STUDY --replicate [part=NAME] [arms=KEY=VALUE,...] [work_dir=DIR]
    python -m normbench reproduce STUDY --add norm=NAME [norm.OPTION=VALUE ...] [--plan] [scale=...]
                                        [results_dir=DIR] [baselines=DIR] [work_dir=DIR]

Run: every part's grid runs as an Optuna study under `work_dir` (default runs/studies/, one SQLite file per
part; or `sweep.storage`, shared by many machines), resumable: a second command picks up where the first
stopped and only missing points run. When every point of every part has finished, the trial records are
exported to `results_dir`/<study>/records/ and the tables, figures, claims, provenance and README are
generated from them. An incomplete study writes nothing under results/. A part with a `tuning:` block first
tunes each arm in its own study, then runs its seeds at each arm's choice (normbench.experiments.tuning);
its tuning trials go to records/<part>-tuning.jsonl.

Check: regenerates everything from the committed records (no training, no database) into a temporary
folder and compares it with the committed files, byte for byte: tables, claims, provenance, README, the
figures' data; the PNG/PDF images too when this matplotlib is the one that drew them (their bytes depend
on its version). Exit code 0 when everything matches, 1 with the list of differences otherwise.

Plan: before anything runs, the runs of every part, per claim the seed-to-seed spread and the smallest
effect (or margin) the planned seeds resolve after Holm, flagging undecidable claims, and the CPU-hours
estimated from committed runs (normbench.experiments.plan). `--check` and `--plan` also warn when another
committed study holds the same runs (normbench.experiments.overlap).

Regenerate: rewrites the generated files in place from the committed records (no training), e.g. after a
change to how tables are drawn; `git diff` then shows exactly what changed.

Add: runs a new norm arm under the study's protocol and writes the study with it beside the committed
baselines, paired by seed (normbench.experiments.add).

Replay and replicate re-run committed trials on this machine (never writing under results/) and compare
them with their records: normbench.experiments.replay.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.experiments.spec import CANONICAL_SCALE, Experiment, available, load_experiment, repo_root
from normbench.files import write_bytes_atomic, write_text_atomic

INPUTS = ("finding.md", "replications.json")  # written by people, read by generate(): never generated
FLAGS = ("--check", "--list", "--regenerate", "--plan", "--replay", "--replicate", "--add")
KEYS = ("scale", "results_dir", "work_dir", "sweep.n_workers", "sweep.storage", "sweep.max_trials", "part", "trial",
        "arms", "allow_oversubscribe", "baselines")
MANIFEST = "manifest.json"
IMAGE_FORMATS = ("png", "pdf")


@dataclass
class Args:
    mode: str  # run | check | list
    study: str | None
    scale: str = CANONICAL_SCALE
    results_dir: Path | None = None
    work_dir: Path | None = None
    n_workers: int = 1
    storage: str | None = None
    max_trials: int | None = None  # per part and invocation: run a study in chunks
    part: str | None = None
    replay_n: int = 1  # --replay N
    trial: str | None = None  # --replay: PART:NUMBER,...
    arms: str | None = None  # --replicate: KEY=VALUE,...
    allow_oversubscribe: bool = False  # sweep.n_workers above normbench.resources' per-core limit
    add: list[str] | None = None  # --add: the new arm's norm=... and norm.*=... (normbench.experiments.add)
    add_plan: bool = False  # --add ... --plan
    baselines: Path | None = None  # --add: the folder holding <study>/records (default: the committed results/)


def parse(args: list[str]) -> Args:
    """Parses the command line; every problem is one ConfigError line listing what is accepted."""
    replay_n = None
    if "--replay" in args:  # `--replay N`: the count belongs to the flag
        i = args.index("--replay")
        if i + 1 < len(args) and args[i + 1].lstrip("-").isdigit():
            replay_n = int(args[i + 1])
            if replay_n < 1:
                raise ConfigError(f"--replay N: N must be an integer >= 1, got {replay_n}")
            args = args[:i + 1] + args[i + 2:]
    added, add_plan = None, False
    if "--add" in args:  # its norm=... / norm.*=... arguments belong to the flag, and it may be planned
        added = [a for a in args if a.split("=", 1)[0] == "norm" or a.startswith("norm.")]
        add_plan = "--plan" in args
        args = [a for a in args if a not in added and a not in ("--add", "--plan")]
    flags = [a for a in args if a.startswith("--")]
    if added is not None and flags:
        raise ConfigError(f"--add goes with --plan alone, not {flags[0]}")
    for f in flags:
        if f not in FLAGS:
            raise ConfigError(f"unknown flag '{f}' for 'reproduce'; accepted: {', '.join(FLAGS)}")
    if len(flags) > 1:
        raise ConfigError(f"give one of {', '.join(FLAGS)}")
    from normbench.resources import check_count, take_override

    allow, args = take_override(args)
    rest = [a for a in args if not a.startswith("--")]
    names = [a for a in rest if "=" not in a]
    out = Args(mode="add" if added is not None else flags[0].lstrip("-") if flags else "run",
               study=names[0] if names else None, add=added, add_plan=add_plan)
    if replay_n is not None:
        out.replay_n = replay_n
    if len(names) > 1:
        raise ConfigError(f"'reproduce' takes one study, got {', '.join(names)}")
    for text in rest:
        if "=" not in text:
            continue
        key, value = text.split("=", 1)
        if key not in KEYS:
            raise ConfigError(f"unknown key '{key}' for 'reproduce'; accepted: {', '.join(KEYS)}")
        if key in ("sweep.n_workers", "sweep.max_trials"):
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")
            setattr(out, "n_workers" if key == "sweep.n_workers" else "max_trials", int(value))
        elif key == "sweep.storage":
            out.storage = value
        elif key in ("results_dir", "work_dir", "baselines"):
            setattr(out, key, Path(value))
        else:
            setattr(out, key, value)
    check_count("sweep.n_workers", out.n_workers, allow)
    out.allow_oversubscribe = allow
    if out.mode == "list":
        if out.study:
            raise ConfigError("--list takes no study")
        return out
    if not out.study:
        raise ConfigError(f"'reproduce' needs a study; accepted: {', '.join(available()) or '(none)'} "
                          "(or --list)")
    if out.mode in ("replay", "replicate"):
        allowed = {"replay": ("trial", "work_dir"), "replicate": ("part", "arms", "work_dir")}[out.mode]
        for key in ("trial", "arms", "part", "storage", "max_trials"):
            if getattr(out, key) and key not in allowed:
                raise ConfigError(f"--{out.mode} takes {', '.join(allowed)} (and scale=, results_dir=), not {key}")
        if out.n_workers != 1:
            raise ConfigError(f"--{out.mode} runs its trials one after another here; it takes no sweep.n_workers")
        return out
    if out.trial or out.arms:
        raise ConfigError("trial= goes with --replay, arms= with --replicate")
    if out.baselines is not None and out.mode != "add":
        raise ConfigError("baselines= goes with --add")
    if out.mode == "add" and (out.part or out.max_trials):
        raise ConfigError("--add runs the new arm in every part that compares norms; it takes no part= or "
                          "sweep.max_trials")
    if out.mode not in ("run", "add") and (out.n_workers != 1 or out.storage or out.work_dir or out.part
                                           or out.max_trials):
        raise ConfigError(f"--{out.mode} reads the committed records only; it takes scale= and results_dir= alone")
    return out


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.mode == "list":
        print(list_studies(args.results_dir or repo_root() / "results"))
        return 0
    exp = load_experiment(str(args.study), args.scale)
    if args.part is not None and args.part not in exp.parts:
        raise ConfigError(f"study {exp.name} has no part '{args.part}'; parts: {', '.join(exp.parts)}")
    results_dir = args.results_dir or repo_root() / "results"
    if args.mode == "check":
        return check(exp, results_dir / exp.results_name)
    if args.mode == "regenerate":
        return regenerate(exp, results_dir / exp.results_name)
    if args.mode == "plan":  # normbench.experiments.plan: runs, spread, resolvable effects; nothing runs
        from normbench.experiments.plan import render_plan

        print(render_plan(exp, results_dir))
        return 0
    if args.mode in ("replay", "replicate"):
        return replay_or_replicate(exp, args, results_dir)
    if args.mode == "add":  # normbench.experiments.add.main runs it (it builds on this module)
        raise ConfigError("--add is run by `python -m normbench reproduce STUDY --add norm=...`")
    return run(exp, args, results_dir)


def replay_or_replicate(exp: Experiment, args: Args, results_dir: Path) -> int:
    """--replay / --replicate: normbench.experiments.replay (checked before any training)."""
    from normbench.experiments import replay as rp

    folder = results_dir / exp.results_name
    rp.check_work_dir(args.work_dir, results_dir)
    if args.mode == "replay":
        wanted = rp.parse_trials(args.trial, list(exp.parts)) if args.trial else None
        return rp.replay(exp, folder, args.replay_n, wanted, args.work_dir)
    out = args.work_dir or repo_root() / "runs" / "replicate" / exp.results_name
    return rp.replicate(exp, folder, args.part, args.arms, out)


def regenerate(exp: Experiment, folder: Path) -> int:
    """Rewrites the study's generated files from its committed records; removes ones no longer generated."""
    _require_records(exp, folder)
    written, claims = generate(exp, folder, folder)
    keep = {p.resolve() for p in written}
    for old in sorted(folder.rglob("*")):
        rel = old.relative_to(folder)
        if old.is_file() and rel.parts[0] != "records" and rel.name not in INPUTS and old.resolve() not in keep:
            old.unlink()
            print(f"removed {old} (no longer generated)")
    for path in written:
        print(f"wrote {path}")
    print_claims(claims)
    return 0


def _require_records(exp: Experiment, folder: Path) -> None:
    if not (folder / "records").is_dir():
        raise ConfigError(f"no committed results for study {exp.name}: {folder}/records/ does not exist (run "
                          f"`python -m normbench reproduce {exp.name}` first)")


# ---------------------------------------------------------------------------------------------- generate


def generate(exp: Experiment, src: Path, out: Path) -> tuple[list[Path], list[Any]]:
    """Writes tables, figures, claims, provenance and README for the records under `src` into `out`."""
    from normbench.experiments.claims import evaluate_all
    from normbench.experiments.figures import build_study_figure
    from normbench.experiments.provenance import provenance
    from normbench.experiments.provenance import to_json as prov_json
    from normbench.experiments.readme import read_finding, render
    from normbench.experiments.records import read_records, results_from_records
    from normbench.experiments.replay import replications_line
    from normbench.experiments.tables import build_study_table
    from normbench.experiments.tuning_report import tuning_outputs
    from normbench.report.figures import render as render_image
    from normbench.report.render import render_latex, render_markdown

    rows = {part: read_records(src / "records" / f"{part}.jsonl") for part in exp.parts}
    results = {part: results_from_records(exp.sweep_name(part), r) for part, r in rows.items()}
    written: list[Path] = []
    tables = []
    for entry in exp.tables:
        table = build_study_table(exp, entry, results[entry["part"]])
        md = render_markdown(table)
        written.append(write_text_atomic(out / f"{entry['name']}.md", md))
        written.append(write_text_atomic(out / f"{entry['name']}.tex",
                                         render_latex(table, label=f"tab:{exp.name}:{entry['name']}")))
        tables.append((entry, md))
    figures = []
    manifest: dict[str, Any] = {"matplotlib": _matplotlib_version(), "images": {}}
    study_figures = [(entry, build_study_figure(exp, entry, results[entry["part"]])) for entry in exp.figures]
    for part in exp.tuning:  # per-arm tuning: its table and curve, from records/<part>-tuning.jsonl
        name, table, fig, (table_caption, fig_caption) = tuning_outputs(exp, part, src)
        md = render_markdown(table)
        written.append(write_text_atomic(out / f"{name}.md", md))
        written.append(write_text_atomic(out / f"{name}.tex", render_latex(table, label=f"tab:{exp.name}:{name}")))
        tables.append(({"name": name, "caption": table_caption}, md))
        study_figures.append(({"name": name, "caption": fig_caption}, fig))
    for entry, fig in study_figures:
        figures.append((entry, fig))
        if fig.fig is None:
            continue
        written.append(write_text_atomic(out / "figures" / f"{entry['name']}.json", fig.data.to_json()))
        for fmt in IMAGE_FORMATS:
            data = render_image(fig.fig, fmt)
            path = out / "figures" / f"{entry['name']}.{fmt}"
            written.append(write_bytes_atomic(path, data))
            manifest["images"][path.name] = hashlib.sha256(data).hexdigest()
    if study_figures:
        written.append(write_text_atomic(out / "figures" / MANIFEST, json.dumps(manifest, indent=1,
                                                                                sort_keys=True) + "\n"))
    claims = evaluate_all(exp.claims, results, exp.alpha)
    written.append(write_text_atomic(out / "claims.json",
                                     json.dumps([c.to_record() for c in claims], indent=1, sort_keys=True) + "\n"))
    prov = provenance(exp, rows)
    written.append(write_text_atomic(out / "provenance.json", prov_json(prov)))
    written.append(write_text_atomic(out / "README.md", render(exp, read_finding(src), claims, tables, figures,
                                                               prov, replications_line(src))))
    return written, claims


def _matplotlib_version() -> str:
    import matplotlib

    return matplotlib.__version__


def print_claims(claims: list[Any]) -> None:
    from normbench.experiments.familywise import format_p

    for c in claims:
        ps = f" (p = {format_p(c.p_value)}, Holm p = {format_p(c.p_holm)})" if c.evidence == "test" else ""
        print(f"claim {c.id}: {c.verdict.upper()} - {c.detail}{ps}")


# ---------------------------------------------------------------------------------------------- run


def run(exp: Experiment, args: Args, results_dir: Path) -> int:
    """Runs the study's parts (resumable), then writes results_dir/<study>/ when every point finished."""
    from normbench.experiments import tuning
    from normbench.experiments.records import write_records
    from normbench.results import storage_url
    from normbench.sweep.plan import make_plan
    from normbench.sweep.runner import describe, run_plan

    work = args.work_dir or repo_root() / "runs" / "studies"
    overrides = [f"results_dir={work}"]
    plans = {}
    for part, spec in exp.parts.items():  # every part composed and checked before anything runs
        if args.part is not None and part != args.part:
            continue
        spec.n_workers = args.n_workers
        spec.storage = args.storage
        spec.max_trials = args.max_trials
        plan = make_plan(spec, overrides)
        if part in exp.tuning:
            tuning.plan_arms(spec, exp.tuning[part], overrides, work)
        plans[part] = (plan, storage_url(work, spec.study, spec.storage))
    code = 0
    for part, (plan, url) in plans.items():
        if part in exp.tuning:  # per-arm tuning first, then the part's seeds at each arm's choice
            print(f"study {exp.name}, part {part}: tuned per arm, then {describe(plan, url)}", flush=True)
            code = max(code, tuning.run_tuned_part(plan.spec, exp.tuning[part], overrides, work,
                                                   lambda text: print(text, flush=True)))
            continue
        print(f"study {exp.name}, part {part}: {describe(plan, url)}", flush=True)
        code = max(code, run_plan(plan, url))
    finished, tuned = {}, {}
    for part, spec in exp.parts.items():
        trials, missing = _finished_trials(spec, work)
        rows = tuning.tuning_rows(spec, exp.tuning[part], overrides, work) if part in exp.tuning else {}
        if missing or rows is None:
            what = "per-arm tuning" if rows is None else f"{missing} point(s)"
            print(f"study {exp.name}: part {part} has {what} not finished; rerun the same command to resume. Nothing "
                  "was written under results/.", flush=True)
            return max(code, 1)
        finished[part], tuned[part] = trials, rows
    out = results_dir / exp.results_name
    for part, trials in finished.items():
        write_records(out / "records" / f"{part}.jsonl", trials)
        if part in exp.tuning:
            tuning.write_tuning_records(tuning.records_path(out, part), tuned[part])
    written, claims = generate(exp, out, out)
    for path in written:
        print(f"wrote {path}")
    print_claims(claims)
    return code


def _finished_trials(spec: Any, work: Path) -> tuple[list[Any], int]:
    """The part's trials and how many of its planned points have no finished (COMPLETE or FAIL) trial."""
    import optuna

    from normbench.results import storage_url
    from normbench.sweep.plan import point_key

    url = storage_url(work, spec.study, spec.storage)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return [], 1
    try:
        trials = optuna.load_study(study_name=spec.study, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return [], 1
    done = {t.user_attrs.get("point_key") for t in trials
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)}
    pending = [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    points = {point_key(t.user_attrs.get("params") or {}) for t in trials}
    planned = len(spec.seeds) * max(1, _grid_points(spec))
    missing = max(planned - len(done & points), len(pending))
    return trials, missing


def _grid_points(spec: Any) -> int:
    n = 1
    for d in spec.grid:
        n *= len(d.values)
    return n


# ---------------------------------------------------------------------------------------------- check


def check(exp: Experiment, folder: Path) -> int:
    """Validates the committed records (normbench.experiments.record_check), then regenerates the study from them
    and compares every file; 0 when all match."""
    from normbench.experiments.record_check import check_records

    _require_records(exp, folder)
    invalid = check_records(exp, folder)
    if invalid:
        for problem in invalid:
            print(f"INVALID: {problem}")
        raise ConfigError(f"study {exp.name}: {len(invalid)} problem(s) in the committed records under "
                          f"{folder / 'records'} (listed above); nothing was regenerated from them")
    with tempfile.TemporaryDirectory(prefix=f"normbench-check-{exp.name}-") as tmp:
        written, claims = generate(exp, folder, Path(tmp))
        problems, notes = compare(Path(tmp), folder, written)
    for note in notes:
        print(note)
    print_claims(claims)
    from normbench.experiments.overlap import overlap_warnings

    for warning in overlap_warnings(folder.parent, exp.results_name):  # reported, not a failure (yet)
        print(warning)
    if problems:
        for p in problems:
            print(f"DIFFERS: {p}")
        print(f"study {exp.name}: {len(problems)} file(s) do not match the committed results; regenerate them with "
              f"`python -m normbench reproduce {exp.name}` and review the diff")
        return 1
    print(f"study {exp.name}: all {len(written)} files regenerate identically from the committed records")
    return 0


def compare(new_dir: Path, old_dir: Path, written: list[Path]) -> tuple[list[str], list[str]]:
    """(differences, notes) between regenerated files and committed ones."""
    problems, notes = [], []
    manifest = new_dir / "figures" / MANIFEST
    old_manifest = old_dir / "figures" / MANIFEST
    same_renderer = True
    if manifest.is_file() and old_manifest.is_file():
        a, b = json.loads(manifest.read_text()), json.loads(old_manifest.read_text())
        same_renderer = a["matplotlib"] == b["matplotlib"]
        if not same_renderer:
            notes.append(f"images not compared byte for byte: drawn with matplotlib {b['matplotlib']}, this is "
                         f"{a['matplotlib']} (their data files are compared)")
    for path in written:
        rel = path.relative_to(new_dir)
        old = old_dir / rel
        if not same_renderer and (rel.suffix.lstrip(".") in IMAGE_FORMATS or rel.name == MANIFEST):
            if not old.is_file():
                problems.append(f"{rel} (missing)")
            continue
        if not old.is_file():
            problems.append(f"{rel} (not committed)")
        elif old.read_bytes() != path.read_bytes():
            problems.append(str(rel))
    produced = {p.relative_to(new_dir) for p in written}
    for old in sorted(old_dir.rglob("*")):
        rel = old.relative_to(old_dir)
        if old.is_file() and rel.parts[0] != "records" and rel.name not in INPUTS and rel not in produced:
            problems.append(f"{rel} (committed but no longer generated)")
    return problems, notes


# ---------------------------------------------------------------------------------------------- list


def list_studies(results_dir: Path) -> str:
    lines = []
    for name in available():
        exp = load_experiment(name)
        prov_path = results_dir / name / "provenance.json"
        if prov_path.is_file():
            prov = json.loads(prov_path.read_text())
            t = prov["time"]
            span = t.get("span_s")
            machine = prov["machine"][0] if prov["machine"] else {}
            cost = (f"{t['cpu_hours']} CPU-hours measured here ({t['trial_wall_s']['n']} runs"
                    f"{f', {span / 3600:.1f} h wall' if span else ''}; {machine.get('cpu_model', '?')}, "
                    f"{machine.get('threads', '?')} thread(s) per run)")
        else:
            cost = f"not run yet ({exp.trials_planned()} runs planned)"
        gpu = [f"{s}: ~{v['gpu_hours']:g} GPU-hours (declared)" for s, v in exp.scales.items() if v.get("gpu_hours")]
        lines += [f"{name}: {exp.title}", f"  question: {exp.question}", f"  cost: {cost}"]
        if gpu:
            lines.append(f"  full scale: {'; '.join(gpu)}")
    return "\n".join(lines) if lines else "no studies in experiments/"
