"""A study's trial records: one JSON line per trial under results/<study>/records/<part>.jsonl.

The records are the study's data: tables, figures, claims, provenance and the README are regenerated from
them alone (no Optuna database needed). Each line holds the trial's number, state, swept params, its
whole summary.json (every metric, per-epoch history, config, code version, environment), its failure
reason and its start and end times, as compact JSON with sorted keys, so a re-run trial is a one-line diff.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.files import write_text_atomic
from normbench.report.study import SweepResults, TrialRecord

FIELDS = ("number", "state", "params", "summary", "fail_reason", "datetime_start", "datetime_complete")


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def trial_line(trial: Any) -> str:
    """One Optuna FrozenTrial as a record line."""
    from normbench.results import stored_summary

    attrs = trial.user_attrs
    # The study holds every trial's whole record (its run folder may be on another machine); a trial that
    # failed before its record reached the study may still have left summary.json in its folder here.
    summary = stored_summary(attrs)
    run_dir = attrs.get("run_dir")
    if summary is None and run_dir and (Path(run_dir) / "summary.json").is_file():
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    row = {
        "number": trial.number, "state": trial.state.name, "params": attrs.get("params") or {},
        "summary": summary if isinstance(summary, dict) else None, "fail_reason": attrs.get("fail_reason"),
        "datetime_start": _stamp(trial.datetime_start), "datetime_complete": _stamp(trial.datetime_complete),
    }
    return json.dumps(row, sort_keys=True, separators=(",", ":"), allow_nan=False)


def write_records(path: Path, trials: list[Any]) -> Path:
    """Writes every trial (by number) of a part's Optuna study as JSON lines."""
    lines = [trial_line(t) for t in sorted(trials, key=lambda t: t.number)]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The record lines of `path` (ConfigError naming the file and line when one is malformed)."""
    if not path.is_file():
        raise ConfigError(f"no trial records at {path}")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a record file is JSON lines") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{i}: not a JSON record ({e.msg})") from None
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ConfigError(f"{path}:{i}: record lacks {', '.join(missing)}")
        rows.append(row)
    return rows


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def results_from_records(name: str, rows: list[dict[str, Any]]) -> SweepResults:
    """The records as the report layer's grouped results (what tables, figures and claims read)."""
    trials = [TrialRecord(number=int(r["number"]), state=str(r["state"]), params=dict(r["params"] or {}),
                          summary=r["summary"], fail_reason=r["fail_reason"],
                          datetime_complete=_when(r["datetime_complete"]))
              for r in sorted(rows, key=lambda r: int(r["number"]))]
    if not trials:
        raise ConfigError(f"part '{name}' has no trial records")
    return SweepResults.from_trials(name, trials)
