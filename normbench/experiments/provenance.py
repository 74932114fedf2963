"""results/<study>/provenance.json: what produced a study's records, computed from the records alone.

Code version (git sha, dirty flag), numerics fingerprints (normbench.numerics), the compute paths (precision,
channels-last, compiled: normbench.training.fast_path) with their run counts, library versions, machine
(CPU model, cores, accelerator, threads per run), seeds, trial counts by outcome, per-trial and total wall
time, CPU time (wall x threads) and the dates of the first start and last completion. Regenerated
byte-identically by `reproduce --check`.
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from typing import Any

from normbench.numerics import record_fingerprint


def _threads(summary: dict[str, Any]) -> int | None:
    t = summary.get("threads")
    if isinstance(t, int):
        return t
    cfg = (summary.get("config") or {}).get("trainer") or {}
    return cfg.get("threads") if isinstance(cfg.get("threads"), int) else None


def _uniq(values: list[Any]) -> list[Any]:
    out: dict[str, Any] = {}
    for v in values:
        out.setdefault(json.dumps(v, sort_keys=True), v)
    return [out[k] for k in sorted(out)]


def compute_paths(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which compute path the runs took (normbench.training.fast_path): precision, memory format, compile,
    with the number of runs of each (records from before channels-last was a key ran contiguous)."""
    counts: dict[str, int] = {}
    paths: dict[str, dict[str, Any]] = {}
    for s in summaries:
        path = {"precision": str(s.get("precision", "32")), "channels_last": bool(s.get("channels_last", False)),
                "compiled": bool(s.get("compiled", False))}
        key = json.dumps(path, sort_keys=True)
        paths[key] = path
        counts[key] = counts.get(key, 0) + 1
    return [{**paths[k], "runs": counts[k]} for k in sorted(paths)]


def provenance(exp: Any, rows_by_part: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The provenance record of a study from its parts' trial records."""
    summaries, walls, cpu, starts, ends = [], [], [], [], []
    parts = {}
    for part, rows in rows_by_part.items():
        counts: dict[str, int] = {}
        for r in rows:
            s = r.get("summary") or {}
            state = r["state"] if r["state"] != "COMPLETE" else str(s.get("status", "ok"))
            counts[state] = counts.get(state, 0) + 1
            if r.get("datetime_start"):
                starts.append(r["datetime_start"])
            if r.get("datetime_complete"):
                ends.append(r["datetime_complete"])
            if s:
                summaries.append(s)
                if isinstance(s.get("wall_s"), (int, float)):
                    walls.append(float(s["wall_s"]))
                    cpu.append(float(s["wall_s"]) * (_threads(s) or 1))
        spec = exp.parts[part]
        parts[part] = {"trials": len(rows), "outcomes": dict(sorted(counts.items())), "seeds": list(spec.seeds),
                       "grid": {d.label: len(d.values) for d in spec.grid}}
    span = None
    if starts and ends:
        span = (datetime.fromisoformat(max(ends)) - datetime.fromisoformat(min(starts))).total_seconds()
    return {
        "study": exp.name,
        "scale": exp.scale,
        "declared": exp.declared,
        "parts": parts,
        "code": _uniq([{"git_sha": s.get("git_sha"), "git_dirty": s.get("git_dirty")} for s in summaries]),
        "numerics": _uniq([record_fingerprint(s) for s in summaries]),
        "versions": _uniq([s.get("versions") for s in summaries if s.get("versions")]),
        "compute_paths": compute_paths(summaries),
        "machine": _uniq([{**(s.get("machine") or {}), "accelerator": s.get("accelerator"),
                           "device": s.get("device_name"), "threads": _threads(s)} for s in summaries]),
        "time": {
            "first_start": min(starts) if starts else None,
            "last_complete": max(ends) if ends else None,
            "span_s": span,
            "trial_wall_s": {"n": len(walls), "total": round(sum(walls), 1),
                             "min": round(min(walls), 1) if walls else None,
                             "median": round(statistics.median(walls), 1) if walls else None,
                             "max": round(max(walls), 1) if walls else None},
            "cpu_hours": round(sum(cpu) / 3600, 2),
        },
    }


def to_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"
