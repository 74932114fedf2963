"""`reproduce --check` does not trust its input: the committed trial records are validated before anything is
regenerated from them.

Checked, each problem named by file, line and field:
    - the files: records/<part>.jsonl for every part (records/<part>-tuning.jsonl for a tuned part), no other;
    - each line: UTF-8 JSON (no NaN or Infinity: the record writer stores null), a mapping with the record
      line's fields, a trial number used once (per tuning study), its summary against the run record's
      definition (normbench.record: undeclared fields, wrong types);
    - each part against the study's declared grid: every grid cell x seed has a record, no record lies
      outside the grid, and no cell x seed has two finished (COMPLETE) records. A FAIL record beside the
      COMPLETE one of its point is a failed attempt that was run again, and stays.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from normbench import record
from normbench.experiments.records import FIELDS
from normbench.sweep.plan import point_key

STATES = ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (a record stores a missing or non-finite number as null)")


def read_lines(path: Path, shown: str) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(line number, record) of every well-formed line of `path`, and the problems of the others.

    Args:
        path: the record file.
        shown: how the messages name it (e.g. records/main.jsonl).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        at = path.read_bytes()[: e.start].count(b"\n") + 1
        return [], [f"{shown}:{at}: not UTF-8 text (byte {e.start}); a record file is JSON lines"]
    rows, problems = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_reject_constant)
        except ValueError as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            problems.append(f"{shown}:{i}: not a JSON record ({msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{shown}:{i}: a record is a JSON object, got {type(row).__name__}")
            continue
        missing = [f for f in FIELDS if f not in row]
        if missing:
            problems.append(f"{shown}:{i}: record lacks {', '.join(missing)}")
            continue
        bad = _trial_problems(row)
        problems.extend(f"{shown}:{i}: {p}" for p in bad + _summary_problems(row["summary"]))
        if not bad:  # a bad summary still stands for its point in the grid check
            rows.append((i, row))
    return rows, problems


def _trial_problems(row: dict[str, Any]) -> list[str]:
    out = []
    number = row["number"]
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        out.append(f"number: {number!r} is not a trial number (an integer >= 0)")
    if row["state"] not in STATES:
        out.append(f"state: {row['state']!r} is not one of {', '.join(STATES)}")
    if not isinstance(row["params"], dict):
        out.append(f"params: {row['params']!r} is not a mapping")
    return out


def _summary_problems(summary: Any) -> list[str]:
    if summary is None:
        return []
    if not isinstance(summary, dict):
        return [f"summary: {type(summary).__name__} is not a run record (a JSON object or null)"]
    return [f"summary.{p}" for p in record.problems(summary)]


def _duplicates(rows: list[tuple[int, dict[str, Any]]], shown: str, key: tuple[str, ...]) -> list[str]:
    seen: dict[tuple, int] = {}
    out = []
    for i, row in rows:
        k = tuple(row.get(f) for f in key)
        if k in seen:
            out.append(f"{shown}:{i}: trial number {row['number']} is already recorded on line {seen[k]}")
        else:
            seen[k] = i
    return out


def grid_problems(spec: Any, rows: list[tuple[int, dict[str, Any]]], shown: str, part: str) -> list[str]:
    """Every grid cell x seed of `spec` recorded, nothing outside it, at most one COMPLETE record per point."""
    expected = [{**c, "seed": s} for s in spec.seeds for c in spec.grid_combinations()]
    keys = {k for p in expected for k in p}
    wanted = {point_key(p): p for p in expected}
    lines: dict[str, list[int]] = defaultdict(list)
    complete: dict[str, list[int]] = defaultdict(list)
    out = []
    for i, row in rows:
        point = {k: v for k, v in row["params"].items() if k in keys}  # a tuned part adds its tuned keys
        pk = point_key(point)
        if pk not in wanted:
            out.append(f"{shown}:{i}: params {_show(point)} are not a point of the declared grid x seeds of part "
                       f"'{part}'")
            continue
        lines[pk].append(i)
        if row["state"] == "COMPLETE":
            complete[pk].append(i)
    for pk, found in complete.items():
        if len(found) > 1:
            out.append(f"{shown}:{found[1]}: {_show(wanted[pk])} is recorded COMPLETE {len(found)} times (lines "
                       f"{', '.join(map(str, found))}); each grid cell x seed runs once")
    missing = [p for pk, p in wanted.items() if pk not in lines]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        out.append(f"{shown}: no record for {len(missing)} declared point(s): "
                   f"{'; '.join(_show(p) for p in missing[:3])}{more}")
    return out


def _show(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items())


def check_records(exp: Any, folder: Path) -> list[str]:
    """Every problem of the committed records of study `exp` under `folder` (empty: they can be trusted)."""
    from normbench.experiments.tuning import RECORDS_SUFFIX

    records = folder / "records"
    parts = {f"{p}.jsonl": p for p in exp.parts}
    tuned = {f"{p}{RECORDS_SUFFIX}.jsonl": p for p in exp.tuning}
    problems = []
    for path in sorted(records.iterdir()):
        if path.name not in parts and path.name not in tuned:
            accepted = ", ".join([*parts, *tuned])
            problems.append(f"records/{path.name}: not a record file of study {exp.name} (its files: {accepted})")
    for name, part in parts.items():
        shown = f"records/{name}"
        if not (records / name).is_file():
            problems.append(f"{shown}: missing (part '{part}' of study {exp.name})")
            continue
        rows, bad = read_lines(records / name, shown)
        problems += bad + _duplicates(rows, shown, ("number",)) + grid_problems(exp.parts[part], rows, shown, part)
    for name in tuned:
        shown = f"records/{name}"
        if not (records / name).is_file():
            problems.append(f"{shown}: missing (the per-arm tuning of part '{tuned[name]}')")
            continue
        rows, bad = read_lines(records / name, shown)
        problems += bad + _duplicates(rows, shown, ("study", "number"))
    return problems
