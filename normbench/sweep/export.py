"""`<results_dir>/<sweep>/trials.csv`: one row per trial, refreshed as trials finish.

Columns: trial bookkeeping (number, state, value, config_id, retry_of, superseded), the swept params
as `params.<key>`, every scalar field of the trial's summary.json (metrics, calibration figures, ...),
then fail_reason, timings, run_dir and the command that reproduces the trial. The study stays the
record; this file is a convenience for spreadsheets and pandas.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from normbench.files import write_text_atomic
from normbench.results import stored_summary
from normbench.sweep.study import superseded_numbers

HEAD = ("number", "state", "value", "config_id", "retry_of", "superseded")
TAIL = ("fail_reason", "datetime_start", "datetime_complete", "duration_s", "worker", "run_dir", "command")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def trial_rows(trials: list[FrozenTrial], param_order: list[str] | None = None) -> tuple[list[str], list[dict]]:
    """(columns, rows) for `trials`; param columns follow `param_order` (the sweep's key order)."""
    gone = superseded_numbers(trials)
    params: list[str] = list(param_order or [])
    metrics: list[str] = []
    rows = []
    for t in trials:
        attrs = t.user_attrs
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name, "value": t.value,
            "config_id": attrs.get("config_id"), "retry_of": attrs.get("retry_of"), "superseded": t.number in gone,
        }
        for k, v in (attrs.get("params") or {}).items():
            if k not in params:
                params.append(k)
            row[f"params.{k}"] = v
        for k, v in (stored_summary(attrs) or {}).items():
            if isinstance(v, (dict, list)):  # config, history, versions: in summary.json
                continue
            if k not in metrics:
                metrics.append(k)
            row[k] = v
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        row.update({
            "fail_reason": attrs.get("fail_reason"),
            "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
            "duration_s": duration, "worker": attrs.get("worker"), "run_dir": attrs.get("run_dir"),
            "command": attrs.get("command"),
        })
        rows.append(row)
    metrics = [m for m in metrics if m not in HEAD and m not in TAIL]
    columns = [*HEAD, *(f"params.{k}" for k in params), *metrics, *TAIL]
    return columns, rows


def write_trials_csv(path: str | Path, trials: list[FrozenTrial], param_order: list[str] | None = None) -> Path:
    """Writes trials.csv atomically (workers on one machine may refresh it at the same time)."""
    columns, rows = trial_rows(trials, param_order)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return write_text_atomic(path, buf.getvalue())
