"""`reproduce STUDY --replay N` and `--replicate`: re-run committed trials and compare them with their records.

    python -m normbench reproduce STUDY --replay [N] [trial=PART:NUMBER,...] [work_dir=DIR]
    python -m normbench reproduce STUDY --replicate [part=NAME] [arms=KEY=VALUE,...] [work_dir=DIR]

Replay re-runs N committed trials (default 1: the N shortest by recorded wall time, ties by part and number;
trials that resumed from a checkpoint are left out: their config alone does not reproduce them) from the
whole config stored in their record, on this machine, into a temporary folder (or `work_dir`; never under
results/), and compares every field of the record (flattened: `history[3].test_acc`, `norm_groups.conv1`)
except those that describe time, throughput, paths, dates or the host (`NOT_COMPARED`). The verdict:

- On the CPU model that recorded the trial, with the same numerics fingerprint (normbench.numerics: numerics
  version, torch version, CPU capability, deterministic kernels), the replay must be bit-identical. A field
  that moved fails the replay (exit 1), naming it and by how much: a code change that moves numbers must
  bump NUMERICS_VERSION (and the affected studies are re-run, or their README says which code made them).
- On another CPU model, or under another fingerprint, the drift is reported per field (absolute and
  relative, the largest first) and the replay passes (exit 0): other kernels round differently, and a
  chaotic trajectory amplifies that.

Replicate re-runs whole arms (every seed of the grid cells that `arms` selects; all of the part without it)
on this machine into `work_dir` (default runs/replicate/STUDY/; resumable: a trial whose summary.json is
there already is not re-run), substitutes the new records for the committed ones of those arms, evaluates
the study's claims again (normbench.experiments.claims) and reports claim by claim whether each verdict
stands, and per arm the shift of each claim metric's mean (paired by seed) against the committed
seed-to-seed spread. It writes replicate.md and replicate.json (and the new records) into that folder. A
replication a study's README should mention is committed as an entry of results/STUDY/replications.json
(`replication_entry`: the CPU model, the arms, the verdicts); the README lists them ("Replicated on").
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError

# Record fields that are not a function of config, seed, code and CPU: time, throughput, paths, dates, the
# host and the code's identity (compared on their own), and the config (the replay's input; its paths differ).
NOT_COMPARED = (
    "wall_s", "examples_per_sec", "train_time_s", "compile_s", "calib_s", "test_modes_s",  # time, throughput
    "compile_steps",  # 0 when the process had compiled the shape before (a sweep worker's later trials)
    "fast_path",  # the table's description of the choice (measured speeds); the settings that ran are the config
    "out_dir", "checkpoint", "resumed_from", "data_source",  # paths
    "created_at",  # dates
    "machine", "versions", "accelerator", "device_name", "git_sha", "git_dirty", "numerics",  # host and code
    "config",  # the input
)
REPLICATIONS_FILE = "replications.json"
MOVED_HINT = "numbers moved on the recording CPU: a code change that moves numbers must bump NUMERICS_VERSION"


# ---------------------------------------------------------------------------------------------- compare


def flatten(record: Mapping[str, Any], skip: tuple[str, ...] = NOT_COMPARED) -> dict[str, Any]:
    """Every leaf of a record as {dotted path: value}, lists indexed (`history[0].test_acc`), `skip` left out."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k in sorted(value):
                walk(f"{prefix}.{k}" if prefix else str(k), value[k])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        else:
            out[prefix] = value

    for key in sorted(record):
        if key not in skip:
            walk(key, record[key])
    return out


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


@dataclass
class Moved:
    """One field whose replayed value differs from the stored one."""

    field: str
    stored: Any
    replayed: Any

    @property
    def abs(self) -> float | None:
        a, b = _number(self.stored), _number(self.replayed)
        return None if a is None or b is None else b - a

    @property
    def rel(self) -> float | None:
        d, a = self.abs, _number(self.stored)
        return None if d is None or not a else d / abs(a)

    def describe(self) -> str:
        if self.abs is None:
            return f"{self.field}: {self.stored!r} -> {self.replayed!r}"
        rel = "" if self.rel is None else f", {self.rel:+.2e} relative"
        return f"{self.field}: {self.stored!r} -> {self.replayed!r} ({self.abs:+.3g}{rel})"

    def to_record(self) -> dict[str, Any]:
        return {"field": self.field, "stored": self.stored, "replayed": self.replayed, "abs": self.abs,
                "rel": self.rel}


MISSING = "(missing)"


def compare_records(stored: Mapping[str, Any], replayed: Mapping[str, Any]) -> tuple[int, list[Moved]]:
    """(fields compared, the fields that moved, the largest absolute change first) between two records.

    The stored record's fields are compared; a field it lacks was added to the record after it was made
    (readers take it as null) and is not compared. A missing field reads as null on either side: a sweep's
    pruner writes `pruned_at_epoch` (null when it did not prune), a replay runs without one.
    """
    a, b = flatten(stored), flatten(replayed)
    keys = sorted(a)
    moved = [Moved(k, a[k], b.get(k, MISSING)) for k in keys
             if not _same(a[k], b.get(k)) and not (a[k] is None and k not in b)]
    moved.sort(key=lambda m: (-(abs(m.abs) if m.abs is not None else math.inf), m.field))
    return len(keys), moved


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return type(x) is type(y) and x == y if isinstance(x, bool) or isinstance(y, bool) else x == y


@dataclass
class Verdict:
    """A replayed trial against its record.

    Attributes:
        trial: `part:number` and the arm.
        strict: same CPU model and numerics fingerprint: the replay must be bit-identical.
        compared: fields compared.
        moved: the fields that differ.
        why_not_strict: what differs between the recording machine/code path and this one.
    """

    trial: str
    strict: bool
    compared: int
    moved: list[Moved] = field(default_factory=list)
    why_not_strict: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.strict and self.moved)

    def lines(self) -> list[str]:
        if not self.moved:
            where = "on the recording CPU and fingerprint" if self.strict else "; ".join(self.why_not_strict)
            return [f"replay {self.trial}: bit-identical, all {self.compared} fields ({where})"]
        if self.strict:
            head = (f"replay {self.trial}: FAILED: {len(self.moved)} of {self.compared} fields moved on the "
                    f"recording CPU model with the same numerics fingerprint; {MOVED_HINT}")
        else:
            head = (f"replay {self.trial}: drift reported, not a failure ({'; '.join(self.why_not_strict)}): "
                    f"{len(self.moved)} of {self.compared} fields moved; largest: {self.moved[0].describe()}")
        return [head, *(f"  moved {m.describe()}" for m in self.moved)]

    def to_record(self) -> dict[str, Any]:
        return {"trial": self.trial, "strict": self.strict, "ok": self.ok, "compared": self.compared,
                "why_not_strict": self.why_not_strict, "moved": [m.to_record() for m in self.moved]}


def verdict(trial: str, stored: Mapping[str, Any], replayed: Mapping[str, Any],
            prov_versions: Mapping[str, Any] | None = None) -> Verdict:
    """Compares a replayed record with the stored one; strict when CPU model and fingerprint match."""
    from normbench.numerics import differences, record_fingerprint, same_numerics

    why = []
    cpu_a = (stored.get("machine") or {}).get("cpu_model")
    cpu_b = (replayed.get("machine") or {}).get("cpu_model")
    if cpu_a != cpu_b:
        why.append(f"CPU model {cpu_a} -> {cpu_b}")
    if stored.get("device_name") != replayed.get("device_name"):
        why.append(f"device {stored.get('device_name')} -> {replayed.get('device_name')}")
    fp_a, fp_b = record_fingerprint(stored, prov_versions), record_fingerprint(replayed)
    if not same_numerics(fp_a, fp_b):
        why.append(f"numerics fingerprint {fp_a} -> {fp_b} ({', '.join(differences(fp_a, fp_b))})")
    compared, moved = compare_records(stored, replayed)
    return Verdict(trial, not why, compared, moved, why)


# ---------------------------------------------------------------------------------------------- run one


def replay_config(summary: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """The stored run config, made to re-run here: new out_dir, no logger, no resume, the recorded
    accelerator and thread count (CPU numbers depend on the thread count)."""
    cfg = json.loads(json.dumps(summary["config"]))
    cfg["out_dir"] = str(out_dir)
    cfg["results_dir"] = str(out_dir.parent)
    cfg.setdefault("logger", {})["name"] = "none"
    trainer = cfg.setdefault("trainer", {})
    trainer["ckpt_path"] = None
    trainer["progress_bar"] = False
    if summary.get("accelerator") in ("cpu", "gpu"):
        trainer["accelerator"] = summary["accelerator"]
    if isinstance(summary.get("threads"), int):
        trainer["threads"] = summary["threads"]
    return cfg


def rerun(summary: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Trains the stored config again into `out_dir`; the new record as written to summary.json."""
    from normbench.train import train

    train(replay_config(summary, out_dir))
    return json.loads((out_dir / "summary.json").read_text())  # as stored: NaN as null, like the records


def _resumed(summary: Mapping[str, Any]) -> bool:
    return bool(summary.get("resumed_from") or ((summary.get("config") or {}).get("trainer") or {}).get("ckpt_path"))


def _arm(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((row.get("params") or {}).items()))


# ---------------------------------------------------------------------------------------------- replay


def parse_trials(text: str, parts: list[str]) -> list[tuple[str, int]]:
    """`main:4,paper:70` (or `4` when the study has one part) -> [(part, number)]."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        part, _, number = item.rpartition(":")
        if not part:
            if len(parts) != 1:
                raise ConfigError(f"trial={item}: name the part (PART:NUMBER); parts: {', '.join(parts)}")
            part = parts[0]
        if part not in parts:
            raise ConfigError(f"trial={item}: no part '{part}'; parts: {', '.join(parts)}")
        if not number.isdigit():
            raise ConfigError(f"trial={item}: the trial number must be an integer (PART:NUMBER)")
        out.append((part, int(number)))
    if not out:
        raise ConfigError("trial= needs PART:NUMBER[,PART:NUMBER...]")
    return out


def choose(rows_by_part: Mapping[str, list[dict[str, Any]]], n: int,
           wanted: list[tuple[str, int]] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The trials to replay: `wanted`, else the n shortest finished ones by recorded wall time (ties: part,
    number), leaving out those that resumed from a checkpoint."""
    if wanted:
        out = []
        for part, number in wanted:
            row = next((r for r in rows_by_part[part] if int(r["number"]) == number), None)
            if row is None or not row.get("summary") or not isinstance(row["summary"].get("config"), dict):
                raise ConfigError(f"trial={part}:{number}: no committed record with a config")
            if _resumed(row["summary"]):
                raise ConfigError(f"trial={part}:{number} resumed from a checkpoint; its config alone does not "
                                  "reproduce it: pick another trial")
            out.append((part, row))
        return out
    pool = []
    for part, rows in rows_by_part.items():
        for r in rows:
            s = r.get("summary") or {}
            wall = _number(s.get("wall_s"))
            if r["state"] == "COMPLETE" and wall is not None and isinstance(s.get("config"), dict) and not _resumed(s):
                pool.append((wall, part, int(r["number"]), r))
    pool.sort(key=lambda t: t[:3])
    return [(part, r) for _, part, _, r in pool[:n]]


def _rows(exp: Any, folder: Path) -> dict[str, list[dict[str, Any]]]:
    from normbench.experiments.records import read_records

    if not (folder / "records").is_dir():
        raise ConfigError(f"no committed results for study {exp.name}: {folder}/records/ does not exist")
    return {part: read_records(folder / "records" / f"{part}.jsonl") for part in exp.parts}


def _prov_versions(folder: Path) -> dict[str, Any] | None:
    path = folder / "provenance.json"
    if not path.is_file():
        return None
    versions = json.loads(path.read_text()).get("versions") or []
    return versions[0] if len(versions) == 1 else None


def check_work_dir(work_dir: Path | None, results_dir: Path) -> None:
    """A replay or replication never writes under the committed results."""
    if work_dir is not None and work_dir.resolve().is_relative_to(results_dir.resolve()):
        raise ConfigError(f"work_dir={work_dir} lies under results_dir={results_dir}: replays and replications "
                          "never write there; give another folder")


def replay(exp: Any, folder: Path, n: int, wanted: list[tuple[str, int]] | None = None,
           work_dir: Path | None = None) -> int:
    """Replays committed trials of a study and prints the verdicts; 0 unless one moved where it must not."""
    rows = _rows(exp, folder)
    chosen = choose(rows, n, wanted)
    if not chosen:
        raise ConfigError(f"study {exp.name}: no committed trial can be replayed (none finished from scratch)")
    versions = _prov_versions(folder)
    verdicts = []
    with tempfile.TemporaryDirectory(prefix=f"normbench-replay-{exp.name}-") as tmp:
        base = work_dir or Path(tmp)
        for part, row in chosen:
            name = f"{exp.name} {part}:{row['number']} ({_arm(row)})"
            print(f"replaying {name}: recorded {row['summary'].get('wall_s', 0):.0f} s on "
                  f"{(row['summary'].get('machine') or {}).get('cpu_model')}", flush=True)
            new = rerun(row["summary"], base / f"{part}-{row['number']}")
            v = verdict(name, row["summary"], new, versions)
            verdicts.append(v)
            for line in v.lines():
                print(line, flush=True)
    bad = [v for v in verdicts if not v.ok]
    print(f"study {exp.name}: {len(verdicts)} trial(s) replayed, {len(bad)} failed"
          + (f"; {MOVED_HINT}" if bad else ""))
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------- replicate


def parse_arms(text: str | None) -> dict[str, str]:
    """`norm=gn,data.batch_composition=k_classes` -> {key: value}."""
    if not text:
        return {}
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"arms={text}: each selector is KEY=VALUE (e.g. arms=norm=gn,data.batch_size=32)")
        out[key] = value
    return out


def _select_arms(exp: Any, part: str, results: Any, selector: Mapping[str, str]) -> list[Any]:
    from normbench.experiments.claims import select
    from normbench.report.table_model import format_value

    for key, value in selector.items():
        if key not in results.dims:
            raise ConfigError(f"arms: part '{part}' of study {exp.name} has no swept key '{key}'; accepted: "
                              f"{', '.join(results.dims)}")
        values = sorted({format_value(g.values.get(key)) for g in results.groups})
        if value not in values:
            raise ConfigError(f"arms: {key}={value} matches no arm; accepted: {', '.join(values)}")
    groups = select(results, selector)
    if not groups:
        raise ConfigError(f"arms: no arm of part '{part}' matches {', '.join(f'{k}={v}' for k, v in selector.items())}")
    return groups


def claim_metrics(claims: list[dict[str, Any]], part: str) -> list[str]:
    """The metrics the study's claims on `part` test, in declaration order."""
    out: list[str] = []
    for c in claims:
        t = c["test"]
        if t.get("part") != part:
            continue
        for key in ("metric", "metric_b", "x", "y"):
            if isinstance(t.get(key), str) and t[key] not in out:
                out.append(t[key])
    return out


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def arm_shift(old_group: Any, new_group: Any, metric: str) -> dict[str, Any]:
    """The shift of a metric's mean from the committed to the replicated runs of one arm, paired by seed."""
    old, new = dict(old_group.metric_values(metric)), dict(new_group.metric_values(metric))
    seeds = [s for s in old if s in new]
    diffs = [new[s] - old[s] for s in seeds]
    shift = statistics.fmean(diffs) if diffs else None
    sd_old, sd_new = _std(list(old.values())), _std(list(new.values()))
    return {"metric": metric, "n_paired": len(seeds),
            "committed_mean": statistics.fmean(old.values()) if old else None,
            "new_mean": statistics.fmean(new.values()) if new else None,
            "shift": shift, "committed_std": sd_old, "new_std": sd_new,
            "shift_over_std": shift / sd_old if shift is not None and sd_old else None,
            "paired_diff_std": _std(diffs)}


def replicate(exp: Any, folder: Path, part: str | None, arms: str | None, out: Path) -> int:
    """Re-runs whole arms here, re-evaluates the claims with them, writes replicate.md/.json into `out`."""
    from normbench.environment import cpu_model
    from normbench.experiments.claims import evaluate_all
    from normbench.experiments.records import results_from_records
    from normbench.files import write_text_atomic

    rows = _rows(exp, folder)
    if part is None:
        if len(exp.parts) != 1:
            raise ConfigError(f"study {exp.name} has parts {', '.join(exp.parts)}: name one with part=NAME")
        part = next(iter(exp.parts))
    selector = parse_arms(arms)
    committed = {p: results_from_records(exp.sweep_name(p), r) for p, r in rows.items()}
    groups = _select_arms(exp, part, committed[part], selector)
    todo = [t for g in groups for t in sorted(g.by_seed.values(), key=lambda t: t.number)]
    by_number = {int(r["number"]): r for r in rows[part]}
    new_rows = {p: list(r) for p, r in rows.items()}
    replaced = []
    for i, t in enumerate(todo, 1):
        row = by_number[t.number]
        if not row.get("summary") or not isinstance(row["summary"].get("config"), dict):
            raise ConfigError(f"replicate: trial {part}:{t.number} has no stored config to re-run")
        run_dir = out / "trials" / part / str(t.number)
        if (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text())
            print(f"[{i}/{len(todo)}] {part}:{t.number} ({_arm(row)}): already replicated in {run_dir}", flush=True)
        else:
            print(f"[{i}/{len(todo)}] {part}:{t.number} ({_arm(row)}): running", flush=True)
            if run_dir.exists():  # an interrupted run: start it again from scratch
                import shutil

                shutil.rmtree(run_dir)
            summary = rerun(row["summary"], run_dir)
        state = "FAIL" if summary.get("status") == "diverged" else "COMPLETE"
        replaced.append({**row, "state": state, "summary": summary, "fail_reason": None})
    swap = {int(r["number"]): r for r in replaced}
    new_rows[part] = [swap.get(int(r["number"]), r) for r in rows[part]]
    fresh = {p: results_from_records(exp.sweep_name(p), r) for p, r in new_rows.items()}
    before, after = evaluate_all(exp.claims, committed), evaluate_all(exp.claims, fresh)
    from normbench.experiments.claims import select

    arm_rows = []
    for g in groups:
        ng = select(fresh[part], g.values)[0]
        shifts = [arm_shift(g, ng, m) for m in claim_metrics(exp.claims, part)]
        arm_rows.append({"arm": dict(g.values),  # a metric the arm does not have (gn: no EMA) is left out
                         "shifts": [s for s in shifts if s["committed_mean"] is not None or s["new_mean"] is not None]})
    identical = sum(not compare_records(by_number[int(r["number"])]["summary"], r["summary"])[1] for r in replaced)
    cpu_rec = sorted({str((r.get("summary") or {}).get("machine", {}).get("cpu_model")) for r in rows[part]})
    report = {
        "study": exp.name, "part": part, "arms": selector or "all", "cpu_model": cpu_model(),
        "recorded_on": cpu_rec, "trials": len(replaced), "bit_identical": identical,
        "claims": [{"id": a.id, "before": a.verdict, "after": b.verdict, "stands": a.verdict == b.verdict,
                    "detail_before": a.detail, "detail_after": b.detail} for a, b in zip(before, after, strict=True)],
        "arm_shifts": arm_rows,
    }
    report["entry"] = replication_entry(report, rows[part], replaced)
    write_text_atomic(out / "replicate.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    write_text_atomic(out / "replicate.md", render_replicate(report))
    from normbench.experiments.records import FIELDS as RECORD_FIELDS

    write_text_atomic(out / "records" / f"{part}.jsonl", "".join(
        json.dumps({k: r[k] for k in RECORD_FIELDS}, sort_keys=True, separators=(",", ":")) + "\n"
        for r in sorted(replaced, key=lambda r: int(r["number"]))))
    print(render_replicate(report))
    print(f"wrote {out / 'replicate.md'} and {out / 'replicate.json'}")
    return 0


def replication_entry(report: Mapping[str, Any], old_rows: list[dict[str, Any]],
                      new_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The line results/STUDY/replications.json keeps of a replication (what the README shows)."""
    from normbench.numerics import record_fingerprint

    fps = sorted({record_fingerprint(r["summary"]) for r in new_rows if r.get("summary")})
    dates = sorted(str(r["summary"].get("created_at", ""))[:10] for r in new_rows if r.get("summary"))
    claims = report["claims"]
    return {"cpu_model": report["cpu_model"], "part": report["part"],
            "arms": report["arms"] if isinstance(report["arms"], str) else
            ",".join(f"{k}={v}" for k, v in report["arms"].items()),
            "trials": report["trials"], "bit_identical": report.get("bit_identical"),
            "numerics": fps, "date": dates[-1] if dates else None,
            "verdicts_stand": sum(c["stands"] for c in claims), "claims": len(claims),
            "flipped": [f"{c['id']}: {c['before']} -> {c['after']}" for c in claims if not c["stands"]]}


def _f(v: float | None, scale: float = 100.0, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v * scale:+.2f}" if signed else f"{v * scale:.2f}"


def render_replicate(report: Mapping[str, Any]) -> str:
    """The replicate report as markdown."""
    arms = report["arms"] if isinstance(report["arms"], str) else ", ".join(
        f"{k}={v}" for k, v in report["arms"].items())
    out = [f"# Replication of {report['study']} (part {report['part']}, arms: {arms})", "",
           f"{report['trials']} trial(s) re-run on {report['cpu_model']} (recorded on "
           f"{', '.join(report['recorded_on'])}), {report['bit_identical']} of them bit-identical to their records "
           "(every field but time, paths, dates and host); the claims evaluated with the new records in place of the "
           "committed ones of these arms.", "", "## Claims", "",
           "| claim | committed | replicated | stands | replicated result |", "| :--- | :--- | :--- | :---: | :--- |"]
    for c in report["claims"]:
        out.append(f"| `{c['id']}` | {c['before']} | {c['after']} | {'yes' if c['stands'] else '**no**'} | "
                   f"{c['detail_after'].replace('|', '/')} |")
    stand = sum(c["stands"] for c in report["claims"])
    out += ["", f"{stand} of {len(report['claims'])} verdicts stand.", "", "## Shift per arm", "",
            "Mean shift (replicated - committed, paired by seed), the committed and the replicated seed-to-seed "
            "standard deviation, and the shift in committed standard deviations; values x100 (percentage points "
            "for accuracies and errors).", "",
            "| arm | metric | n | committed mean | replicated mean | shift | committed std | replicated std | "
            "shift / std |", "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a in report["arm_shifts"]:
        name = ", ".join(f"{k}={v}" for k, v in a["arm"].items())
        for s in a["shifts"]:
            ratio = "n/a" if s["shift_over_std"] is None else f"{s['shift_over_std']:+.2f}"
            out.append(f"| {name} | {s['metric']} | {s['n_paired']} | {_f(s['committed_mean'])} | "
                       f"{_f(s['new_mean'])} | {_f(s['shift'], signed=True)} | {_f(s['committed_std'])} | "
                       f"{_f(s['new_std'])} | {ratio} |")
    return "\n".join(out) + "\n"


def replications_line(folder: Path) -> str | None:
    """The README's "Replicated on" line from results/STUDY/replications.json (None without the file)."""
    path = folder / REPLICATIONS_FILE
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON ({e.msg})") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: must hold a list of replicate.json 'entry' objects")
    items = []
    for entry in entries:
        flipped = f"; flipped: {', '.join(entry['flipped'])}" if entry.get("flipped") else ""
        same = "" if entry.get("bit_identical") is None else f", {entry['bit_identical']} bit-identical to the records"
        items.append(f"{entry.get('cpu_model')} ({entry.get('date')}; part {entry.get('part')}, arms "
                     f"{entry.get('arms')}, {entry.get('trials')} runs{same}: {entry.get('verdicts_stand')} of "
                     f"{entry.get('claims')} verdicts stand{flipped})")
    return "- replicated on: " + "; ".join(items) if items else None
