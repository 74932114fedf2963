"""The report of a part's per-arm tuning, regenerated from results/<study>/records/<part>-tuning.jsonl alone.

Per arm: the chosen values, whether a chosen value lies at an edge of what was searched, the best validation
error, the number of configurations tried and the tuning's CPU cost; as a table (<part>_tuning.md/.tex) and
the tuning curve (figures/<part>_tuning.png/.pdf/.json: validation error against the learning rate, one
series per arm, log x axis, the chosen setting starred).

Edge rule: a chosen value is at an edge when no configuration tried lies beyond it on one side, i.e. it is
the smallest or the largest value of that key the arm's tuning tried (failed and diverged configurations
count as tried). The best is then not bracketed by a worse setting on that side: the optimum may lie outside
the search space, and the report says "search space edge: widen it".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normbench.experiments.tuning import Tuning, best_config, config_rows, records_path
from normbench.report.table_model import DIM_LABELS, Cell, Table

EDGE_RULE = ("At edge: the chosen value is the smallest or the largest value of that key the arm's tuning tried "
             "(failed and diverged configurations count), so no worse setting brackets it on that side")
WIDEN = "search space edge: widen it"


@dataclass
class ArmSummary:
    """One arm's tuning as the report shows it."""

    study: str
    arm: dict[str, Any]
    configs: list[dict[str, Any]]  # experiments.tuning.config_rows
    chosen: dict[str, Any] | None
    best_value: float | None
    edges: dict[str, str]  # key -> "low" | "high" (at that edge of the values tried)
    cpu_s: float
    runs: int


def read_tuning_rows(folder: Path, part: str) -> dict[str, list[dict[str, Any]]]:
    """The tuning records of `part` by arm study, in file order (ConfigError when the file is missing)."""
    from normbench.experiments.records import read_records

    out: dict[str, list[dict[str, Any]]] = {}
    for row in read_records(records_path(folder, part)):
        out.setdefault(str(row.get("study")), []).append(row)
    return out


def _cpu_s(row: dict[str, Any]) -> float:
    s = row.get("summary") or {}
    wall = s.get("wall_s")
    threads = s.get("threads") or ((s.get("config") or {}).get("trainer") or {}).get("threads") or 1
    return float(wall) * int(threads) if isinstance(wall, (int, float)) else 0.0


def summarize(tuning: Tuning, rows: dict[str, list[dict[str, Any]]]) -> list[ArmSummary]:
    """Every arm's chosen setting, edges, best objective and cost."""
    out = []
    for study, arm_rows in rows.items():
        first = min(arm_rows, key=lambda r: int(r["number"]))
        arm = {k: v for k, v in (first.get("params") or {}).items() if k not in tuning.space_keys and k != "seed"}
        configs = config_rows(arm_rows, tuning)
        best = best_config(configs, tuning)
        edges: dict[str, str] = {}
        if best is not None:
            for key in tuning.space_keys:
                tried = [c["params"][key] for c in configs if isinstance(c["params"].get(key), (int, float))]
                value = best["params"][key]
                if not isinstance(value, (int, float)) or not tried:
                    continue
                if value <= min(tried):
                    edges[key] = "low"
                elif value >= max(tried):
                    edges[key] = "high"
        out.append(ArmSummary(study, arm, configs, best["params"] if best else None,
                              best["value"] if best else None, edges, sum(_cpu_s(r) for r in arm_rows),
                              len(arm_rows)))
    return out


def _arm_label(arm: dict[str, Any]) -> str:
    return ", ".join(str(v) if k == "norm" else f"{DIM_LABELS.get(k, k)}={v}" for k, v in arm.items()) or "all"


def _is_acc(objective: str) -> bool:
    return objective.endswith("_acc")


def _error(tuning: Tuning, value: float) -> float:
    """The objective as the report shows it: a validation error in % for an accuracy, else as is."""
    return 100.0 * (1.0 - value) if _is_acc(tuning.objective) else value


def _error_label(tuning: Tuning) -> str:
    return "validation error (%)" if _is_acc(tuning.objective) else tuning.objective.replace("_", " ")


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_table(part: str, tuning: Tuning, arms: list[ArmSummary]) -> Table:
    arm_keys = list(dict.fromkeys(k for a in arms for k in a.arm))
    headers = [DIM_LABELS.get(k, k) for k in arm_keys]
    headers += [f"chosen {DIM_LABELS.get(k, k)}" for k in tuning.space_keys]
    headers += ["at edge", f"best {_error_label(tuning)}", "tuning trials", "tuning CPU-s"]
    rows = []
    for a in arms:
        row = [Cell("text", text=str(a.arm.get(k, "–"))) for k in arm_keys]
        row += [Cell("text", text=_num(a.chosen[k]) if a.chosen else "–") for k in tuning.space_keys]
        edge = "; ".join(f"{side} ({DIM_LABELS.get(k, k)}): {WIDEN}" for k, side in a.edges.items())
        row.append(Cell("text", text=edge or "no"))
        row.append(Cell("text", text=f"{_error(tuning, a.best_value):.2f}" if a.best_value is not None
                        and _is_acc(tuning.objective) else _num(a.best_value) if a.best_value is not None else "–"))
        row.append(Cell("text", text=f"{len(a.configs)} × {len(tuning.seeds)} seed"
                                     f"{'s' if len(tuning.seeds) > 1 else ''}"))
        row.append(Cell("text", text=f"{a.cpu_s:,.1f}"))
        rows.append(row)
    space = "; ".join(f"{k} ~ {json.dumps(tuning.raw['space'][k], sort_keys=True)}" for k in tuning.space_keys)
    total = sum(a.cpu_s for a in arms)
    footer = [
        f"Part {part}: each arm tuned in its own Optuna study, {tuning.trials} configurations × {len(tuning.seeds)} "
        f"tuning seed(s) {tuning.seeds} ({tuning.raw['sampler']} sampler, seed {tuning.raw['sampler_seed']}, pruner "
        f"{tuning.raw['pruner']}), objective {tuning.objective} ({tuning.direction}) on the validation split; "
        f"the chosen setting is the best mean over the tuning seeds (ties: the smaller value).",
        f"Search space: {space}.",
        EDGE_RULE + ".",
        f"Tuning CPU-s: the tuning runs' wall time × torch threads; {total:,.1f} CPU-s for the {len(arms)} arm(s).",
    ]
    return Table(headers=headers, align=["l"] * len(arm_keys) + ["r"] * (len(headers) - len(arm_keys)), rows=rows,
                 footer=footer, caption=f"Per-arm tuning of part {part}")


def build_figure(name: str, tuning: Tuning, arms: list[ArmSummary]) -> Any:
    from normbench.report.figures import Figure, FigureData, Panel, Series, draw

    key = tuning.curve_key
    title = f"Per-arm tuning: {_error_label(tuning)} against {key} ({tuning.trials} configurations per arm)"
    series = []
    for i, a in enumerate(arms):
        points = sorted((c["params"][key], _error(tuning, c["value"]), c["params"] == a.chosen)
                        for c in a.configs if c["value"] is not None and isinstance(c["params"].get(key), (int, float)))
        if not points:
            continue
        series.append(Series(label=_arm_label(a.arm), x=[p[0] for p in points], y=[p[1] for p in points], color=i,
                             starred=[p[2] for p in points]))
    if not series:
        return Figure(name, title, skipped="no tuning configuration completed")
    dist = tuning.raw["space"][key]
    xlabel = f"{key} (log scale; searched {dist['low']:g} to {dist['high']:g})"
    data = FigureData(name, title, [Panel(xlabel=xlabel, ylabel=_error_label(tuning), series=series, xscale="log10")])
    return Figure(name, title, fig=draw(data), data=data)


def caption(part: str, tuning: Tuning) -> tuple[str, str]:
    """The README captions of the tuning table and figure."""
    table = (f"Per-arm tuning of part `{part}`: the setting each arm's final seeds ran at, whether it lies at an "
             f"edge of what was searched, the best {_error_label(tuning)} and the tuning's cost.")
    figure = (f"Tuning curves of part `{part}`: {_error_label(tuning)} of every configuration tried (mean over the "
              f"tuning seeds) against {tuning.curve_key}, one series per arm; the chosen setting starred.")
    return table, figure


def tuning_outputs(exp: Any, part: str, src: Path) -> tuple[str, Table, Any, tuple[str, str]]:
    """(name, table, figure, captions) of a tuned part, from its committed tuning records."""
    tuning = exp.tuning[part]
    arms = summarize(tuning, read_tuning_rows(src, part))
    name = f"{part}_tuning"
    return name, build_table(part, tuning, arms), build_figure(name, tuning, arms), caption(part, tuning)
