"""The paper layout of a table (`table.layout=pivot`): one swept key as rows, another as columns, one metric.

    rows: norm                 # a swept key, or a list of them (e.g. [norm, norm.accumulation_aware])
    cols: data.batch_size      # a swept key (numbers sorted ascending)
    value: test_acc            # the metric in the cells (with metric: error, shown as test error)
    compare: bn                # Δ rows: each other row minus this one, per column (a value or {key: value})
    where: {...}               # pin other swept keys (each (row, column) must be one configuration)
    sort: 4                    # order the rows by their value in this column (best first)
    col_labels: {4: "4 (x 8 workers)"}    row_options: true     deltas_only: true

Cells are `mean ± std` over the seeds that finished (their count in parentheses when it is not every
seed); the best per column is bold. A Δ cell is the difference to the baseline row with the half-width
of its Student-t interval (paired by seed, Welch when the seeds do not pair up; `report.stats`), and a †
where it stays significant after Holm's correction over every Δ cell of the table. With `row_options`,
the footer lists each row's swept keys that are neither rows nor columns (e.g. a norm's own options).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normbench.errors import ConfigError
from normbench.report.stats import PAIRED, compare_seeds, holm_adjust
from normbench.report.study import ConfigGroup, SweepResults, sort_key
from normbench.report.table_model import (
    DIM_LABELS,
    Cell,
    Column,
    Table,
    column_spec,
    filter_results,
    footer,
    format_number,
    format_value,
    metric_column,
)


def _as_keys(value: Any, what: str, results: SweepResults) -> list[str]:
    keys = [value] if isinstance(value, str) else list(value or [])
    if not keys:
        raise ConfigError(f"table.{what} needs a swept key (e.g. {what}=norm); swept: {', '.join(results.dims)}")
    for k in keys:
        if k not in results.dims:
            raise ConfigError(f"table.{what}: '{k}' is not a swept key of '{results.sweep}'; "
                              f"swept: {', '.join(results.dims) or '(none)'}")
    return keys


def row_label(values: Mapping[str, Any], keys: list[str], labels: Mapping[str, str]) -> str:
    parts = []
    for k in keys:
        v = values.get(k)
        if v is None:
            continue
        parts.append(format_value(v) if k == keys[0] else f"{labels.get(k, DIM_LABELS.get(k, k))}={format_value(v)}")
    return ", ".join(parts) or "–"


def _selector(compare: Any, rows: list[str]) -> dict[str, str]:
    spec = dict(compare) if isinstance(compare, Mapping) else {rows[0]: compare}
    return {k: format_value(v) for k, v in spec.items()}


def build_pivot(results: SweepResults, options: dict[str, Any]) -> Table:
    """The pivot table of `results` (see the module docstring)."""
    labels = options.get("labels") or {}
    results = filter_results(results, options.get("where"))
    rows_keys = _as_keys(options.get("rows"), "rows", results)
    (col_key,) = _as_keys(options.get("cols"), "cols", results)[:1]
    col = metric_column(column_spec(options.get("value") or "test_acc", labels), options.get("metric"))
    level = float(options.get("level", 0.95))
    col_labels = {format_value(k): str(v) for k, v in (options.get("col_labels") or {}).items()}

    row_names: list[str] = []
    col_values: list[Any] = []
    cell_group: dict[tuple[str, str], ConfigGroup] = {}
    for g in results.groups:
        r, c = row_label(g.values, rows_keys, labels), g.values.get(col_key)
        key = (r, format_value(c))
        if key in cell_group:
            others = [d for d in results.dims if d not in rows_keys and d != col_key
                      and format_value(g.values[d]) != format_value(cell_group[key].values[d])]
            raise ConfigError(f"table: row '{r}', column {format_value(c)} holds several configurations (they differ "
                              f"in {', '.join(others)}); pin them with table.where={{key: value}}")
        cell_group[key] = g
        if r not in row_names:
            row_names.append(r)
        if c not in col_values:
            col_values.append(c)
    col_values.sort(key=sort_key)
    cols = [format_value(c) for c in col_values]
    n_seeds = len(results.seeds)

    stats: dict[tuple[str, str], tuple[float, float | None, int]] = {}
    for key, g in cell_group.items():
        vals = [v for _, v in g.metric_values(col.key)]
        if vals:
            from normbench.report.stats import SeedStats

            s = SeedStats.of(vals)
            stats[key] = (s.mean, s.std, s.n)  # type: ignore[assignment]

    sort = options.get("sort")
    if sort is not None:
        target = format_value(sort)
        if target not in cols:
            raise ConfigError(f"table.sort: {sort!r} is not a column; columns: {', '.join(cols)}")
        sign = -1.0 if col.better == "max" else 1.0
        row_names.sort(key=lambda r: sign * stats[(r, target)][0] if (r, target) in stats else float("inf"))

    best: dict[str, set[str]] = {}
    for c in cols:
        shown = {r: float(format_number(stats[(r, c)][0], col).replace(",", "")) for r in row_names if (r, c) in stats}
        if col.better in ("max", "min") and len(shown) >= 2:
            target_v = (max if col.better == "max" else min)(shown.values())
            best[c] = {r for r, v in shown.items() if v == target_v}

    def stat_cell(r: str, c: str) -> Cell:
        if (r, c) not in stats:
            return Cell("empty")
        mean, std, n = stats[(r, c)]
        return Cell("stat", mean=format_number(mean, col), std=None if std is None else format_number(std, col), n=n,
                    show_n=n != n_seeds, bold=r in best.get(c, set()))

    row_head = " / ".join(labels.get(k, DIM_LABELS.get(k, k)) for k in rows_keys[:1])
    col_head = labels.get(col_key, DIM_LABELS.get(col_key, col_key))
    headers = [f"{row_head} \\ {col_head}", *(col_labels.get(c, c) for c in cols)]
    align = ["l", *("r" * len(cols))]
    body: list[list[Cell]] = []
    if not options.get("deltas_only"):
        body = [[Cell("text", r), *(stat_cell(r, c) for c in cols)] for r in row_names]

    compare = options.get("compare")
    if compare is not None:
        body += _delta_rows(results, cell_group, row_names, cols, _selector(compare, rows_keys), rows_keys, col,
                            level, n_seeds)
    elif options.get("deltas_only"):
        raise ConfigError("table.deltas_only needs table.compare (the baseline row)")

    extra = [f"{col.label}; cells: mean ± std over the {n_seeds} seeds (fewer finished where (n) is shown)"]
    if options.get("row_options"):
        extra += _row_options(cell_group, rows_keys, col_key, results.dims, labels)
    lines = footer(results, {**options, "_pivot": True}, body, extra)
    return Table(headers, align, body, lines)


def _delta_rows(results: SweepResults, cell_group: dict[tuple[str, str], ConfigGroup], row_names: list[str],
                cols: list[str], baseline: dict[str, str], rows_keys: list[str], col: Column, level: float,
                n_seeds: int) -> list[list[Cell]]:
    for k in baseline:
        if k not in results.dims:
            raise ConfigError(f"table.compare: '{k}' is not a swept key of '{results.sweep}'")
    base_rows = [r for r in row_names
                 if any(all(format_value(g.values.get(k)) == v for k, v in baseline.items())
                        for (rr, _), g in cell_group.items() if rr == r)]
    if len(base_rows) != 1:
        raise ConfigError(f"table.compare: {len(base_rows)} rows match the baseline "
                          f"{', '.join(f'{k}={v}' for k, v in baseline.items())}; need exactly one")
    base = base_rows[0]
    pending: list[tuple[int, int, Any]] = []
    out: list[list[Cell]] = []
    for r in row_names:
        if r == base:
            continue
        row: list[Cell] = [Cell("text", f"Δ {r} − {base}")]
        for c in cols:
            a, b = cell_group.get((r, c)), cell_group.get((base, c))
            mine = dict(a.metric_values(col.key)) if a else {}
            theirs = dict(b.metric_values(col.key)) if b else {}
            if not mine or not theirs:
                row.append(Cell("empty"))
                continue
            pending.append((len(out), len(row), compare_seeds(theirs, mine, level)))
            row.append(Cell("empty"))
        out.append(row)
    adjusted = holm_adjust([cmp.p_value for _, _, cmp in pending])
    for (i, j, cmp), p_holm in zip(pending, adjusted, strict=True):
        half = None if cmp.high is None else format_number((cmp.high - cmp.low) / 2, col)
        out[i][j] = Cell("delta", mean=format_number(cmp.mean, col, signed=True), n=cmp.n,
                         show_n=not (cmp.n == n_seeds and cmp.method == PAIRED),
                         low=None if cmp.low is None else format_number(cmp.low, col, signed=True),
                         high=None if cmp.high is None else format_number(cmp.high, col, signed=True), halfwidth=half,
                         method=cmp.method, n_baseline=cmp.n_baseline, p_holm=p_holm,
                         significant=p_holm is not None and p_holm <= 1 - level)
    return out


def _row_options(cell_group: dict[tuple[str, str], ConfigGroup], rows_keys: list[str], col_key: str,
                 dims: list[str], labels: Mapping[str, str]) -> list[str]:
    """Per row, the swept keys outside rows and columns that it sets (a norm's own options, say)."""
    others = [d for d in dims if d not in rows_keys and d != col_key]
    # keys that follow the column (e.g. emulate_devices with the batch per worker) say nothing about a row
    by_col: dict[str, set[str]] = {}
    for (_, c), g in cell_group.items():
        for d in others:
            by_col.setdefault(d, set()).add(f"{c}={format_value(g.values.get(d))}")
    col_linked = {d for d in others if len(by_col[d]) == len({c for _, c in cell_group})}
    lines = []
    rows: dict[str, dict[str, str]] = {}
    for (r, _), g in cell_group.items():
        for d in others:
            if d in col_linked or g.values.get(d) is None:
                continue
            rows.setdefault(r, {})[d] = format_value(g.values[d])
    for r, opts in rows.items():
        lines.append(f"options of {r}: " + ", ".join(f"{labels.get(k, k)}={v}" for k, v in opts.items()))
    return lines
