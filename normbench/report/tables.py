"""Paper tables from a stored sweep: `<results_dir>/<sweep>/table.md` and `table.tex` (booktabs).

One row per configuration of the swept keys other than seed; each metric cell is `mean ± std (n)` over the
seeds whose run finished ok, the best value per column in bold, and a `seeds` column that names every
failed, diverged, pruned, running, queued (never started) or missing seed. With `compare` set (e.g.
`table.compare=bn`), a column gives each row's difference to the baseline row (same other keys,
`compare_key` = the baseline) with a Student-t confidence interval: paired on the per-seed differences when
every seed of the row has a baseline value (n - 1 df), Welch's unpaired interval otherwise, none with n < 2
(`normbench.report.stats.compare_seeds`). A † marks the differences that stay significant after Holm's
correction over all the differences in the table (family-wise error rate 1 - level). The footer states
the method, n and the guard, the code version, a hash of the configurations and the date of the newest
stored result, so regenerating from the same study gives byte-identical files.

Options (the sweep file's `table:` mapping, or `table.<key>=...` on the command line):
    layout: long (default: this module) or pivot (rows x columns of one metric: normbench.report.pivot).
    metric: accuracy (default) or error: accuracy columns are shown as errors (100 - accuracy, lower is
        better), e.g. test_acc as test error (%).
    columns: metrics to show, names of summary fields or mappings {key, label, scale, digits, better,
        relative_to}; `relative_to: {norm: bn}` shows each row's mean over the mean of the matching baseline
        row (same other keys). Default test_acc, acc_gap, test_acc_precise, calib_kl, examples_per_sec (those
        no run recorded are left out and named in the footer).
    dims: the swept keys shown as columns (default all); where: {key: value} keeps matching rows only;
    sort: a column's metric to order rows by (best first); references: rows of published numbers
        [{label, key, rows: {value of key: {metric: number}}, source}]; caption: the LaTeX caption.
    compare: the baseline value of `compare_key` for the paired comparison (null: no comparison).
    compare_key: the swept key the baseline is chosen on (default `norm`).
    compare_metric: the metric compared (default: the first column).
    level: the confidence level of the interval (default 0.95).
    labels: {swept key or metric: header label} overrides.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from normbench.errors import ConfigError
from normbench.files import write_text_atomic
from normbench.report.metrics import error_key
from normbench.report.pivot import build_pivot
from normbench.report.render import render_latex, render_markdown
from normbench.report.stats import PAIRED, SeedStats, compare_seeds, holm_adjust
from normbench.report.study import SweepResults
from normbench.report.table_model import (
    DIM_LABELS,
    OUTCOME_ORDER,
    Cell,
    Column,
    Table,
    column_spec,
    filter_results,
    footer,
    format_number,
    format_value,
    metric_column,
    table_columns,
)

TABLE_OPTIONS: dict[str, Any] = {
    "columns": None,
    "compare": None,
    "compare_key": "norm",
    "compare_metric": None,
    "level": 0.95,
    "labels": {},
    "layout": "long",
    "metric": "accuracy",
    "dims": None,
    "where": None,
    "sort": None,
    "references": None,
    "caption": None,
    # pivot layout (normbench.report.pivot)
    "rows": None,
    "cols": None,
    "value": None,
    "col_labels": None,
    "row_options": False,
    "deltas_only": False,
}


def _seed_cell(group, seeds: list[Any]) -> Cell:
    by: dict[str, list[str]] = {}
    ok = 0
    for seed in seeds:
        t = group.by_seed.get(seed)
        outcome = t.outcome if t is not None else "missing"
        if outcome == "ok":
            ok += 1
        else:
            by.setdefault(outcome, []).append(str(seed))
    text = f"{ok}/{len(seeds)}"
    order = sorted(by, key=lambda o: (OUTCOME_ORDER.index(o) if o in OUTCOME_ORDER else len(OUTCOME_ORDER), o))
    if order:
        text += " (" + "; ".join(f"{o}: {', '.join(by[o])}" for o in order) + ")"
    return Cell("text", text)


def _best_rows(col: Column, stats: list[SeedStats]) -> set[int]:
    """Rows whose displayed mean is the best of the column (ties at display precision all bold)."""
    if col.better is None:
        return set()
    shown = {i: float(format_number(s.mean, col).replace(",", "")) for i, s in enumerate(stats) if s.mean is not None}
    if len(shown) < 2:
        return set()
    score = {"max": lambda v: -v, "min": lambda v: v, "absmin": abs}[col.better]
    best = min(score(v) for v in shown.values())
    return {i for i, v in shown.items() if score(v) == best}


def build_table(results: SweepResults, options: dict[str, Any]) -> Table:
    """The format-free table for `results` with the `table:` options (see the module docstring)."""
    layout = options.get("layout") or "long"
    if layout == "pivot":
        return replace(build_pivot(results, options), caption=str(options.get("caption") or ""))
    if layout != "long":
        raise ConfigError(f"table.layout must be long or pivot, got {layout!r}")
    results = filter_results(results, options.get("where"))
    labels = options.get("labels") or {}
    columns, requested = table_columns(options)
    columns = [metric_column(c, options.get("metric")) for c in columns]
    footer_extra = []
    if not requested:  # defaults that no run recorded (e.g. calibration not measured) are left out, and said so
        present = [c for c in columns if any(g.metric_values(c.key) for g in results.groups)]
        absent = [c.key for c in columns if c not in present]
        columns = present or columns[:1]
        if absent:
            footer_extra.append(f"not recorded by any run: {', '.join(absent)}")
    dims = options.get("dims") or results.dims
    for d in dims:
        if d not in results.dims:
            raise ConfigError(f"table.dims: '{d}' is not a swept key of '{results.sweep}'; "
                              f"swept: {', '.join(results.dims) or '(none)'}")

    groups = list(results.groups)
    stats = {c.key: [SeedStats.of(_column_values(results, g, c)) for g in groups] for c in columns}
    order = _row_order(options.get("sort"), columns, stats, len(groups))
    groups = [groups[i] for i in order]
    stats = {k: [v[i] for i in order] for k, v in stats.items()}
    best = {c.key: _best_rows(c, stats[c.key]) for c in columns}

    headers = [labels.get(d, DIM_LABELS.get(d, d)) for d in dims]
    align = ["l"] * len(dims)
    for c in columns:
        headers.append(c.label)
        align.append("r")

    compare = options.get("compare")
    delta_cells: list[Cell] | None = None
    if compare is not None:
        delta_header, delta_cells = _compare_cells(replace(results, groups=groups), columns, options, labels)
        headers.append(delta_header)
        align.append("r")
    seed_cells = [_seed_cell(g, results.seeds) for g in groups]
    # every configuration has all its seeds: the footer's run count says so, the column would repeat it
    show_seeds = any(c.text != f"{len(results.seeds)}/{len(results.seeds)}" for c in seed_cells)
    if show_seeds:
        headers.append("seeds ok")
        align.append("l")

    rows = []
    for i, g in enumerate(groups):
        row = [Cell("text", format_value(g.values[d])) for d in dims]
        for c in columns:
            s = stats[c.key][i]
            if s.mean is None:
                row.append(Cell("empty"))
            else:
                every = s.n == len(results.seeds)  # every seed finished: said once, in the footer
                row.append(Cell("stat", mean=format_number(s.mean, c),
                                std=None if s.std is None else format_number(s.std, c), n=s.n, show_n=not every,
                                bold=i in best[c.key]))
        if delta_cells is not None:
            row.append(delta_cells[i])
        if show_seeds:
            row.append(seed_cells[i])
        rows.append(row)
    for ref in options.get("references") or []:
        rows += _reference_rows(ref, dims, columns, delta_cells is not None, show_seeds)
        footer_extra.append(f"{ref.get('label', 'reference')}: {ref.get('source', 'published figures')}")
    for c in columns:
        if c.relative_to:
            what = ", ".join(f"{k}={format_value(v)}" for k, v in c.relative_to.items())
            footer_extra.append(f"{c.label}: each run over the mean of the {what} row with the same other keys")
    if len(dims) < len(results.dims):
        footer_extra += _hidden_keys(groups, dims, results.dims)
    return Table(headers, align, rows, footer(results, options, rows, footer_extra),
                 caption=str(options.get("caption") or ""))


def _column_values(results: SweepResults, g, col: Column) -> list[float]:
    values = [v for _, v in g.metric_values(col.key)]
    if not col.relative_to or not values:
        return values
    others = [d for d in results.dims if d not in col.relative_to]
    bases = [b for b in results.groups
             if all(format_value(b.values.get(k)) == format_value(v) for k, v in col.relative_to.items())
             and _matches(g.values, b.values, others)]
    base = [v for _, v in bases[0].metric_values(col.key)] if len(bases) == 1 else []
    if not base or sum(base) == 0:
        return []
    mean = sum(base) / len(base)
    return [v / mean for v in values]


def _row_order(sort: Any, columns: list[Column], stats: dict[str, list[SeedStats]], n: int) -> list[int]:
    if sort is None:
        return list(range(n))
    col = next((c for c in columns if c.key == sort or c.key == error_key(str(sort))), None)
    if col is None:
        raise ConfigError(f"table.sort: '{sort}' is not one of the columns ({', '.join(c.key for c in columns)})")
    sign = -1.0 if col.better == "max" else 1.0
    key = [sign * s.mean if s.mean is not None else float("inf") for s in stats[col.key]]
    return sorted(range(n), key=lambda i: key[i])


def _reference_rows(ref: dict[str, Any], dims: list[str], columns: list[Column], has_delta: bool,
                    has_seeds: bool) -> list[list[Cell]]:
    """Published numbers (e.g. d2l's) as rows beside ours: text cells, never bold, no statistics."""
    key = ref.get("key", "norm")
    out = []
    for value, metrics in (ref.get("rows") or {}).items():
        row = [Cell("text", f"{value} ({ref.get('label', 'reference')})" if d == key else "") for d in dims]
        if key not in dims:
            row[0] = Cell("text", f"{value} ({ref.get('label', 'reference')})")
        for c in columns:
            v = (metrics or {}).get(c.key)
            row.append(Cell("text", format_number(float(v), c)) if v is not None else Cell("empty"))
        if has_delta:
            row.append(Cell("empty"))
        if has_seeds:
            row.append(Cell("text", "published"))
        out.append(row)
    return out


def _hidden_keys(groups: list, dims: list[str], all_dims: list[str]) -> list[str]:
    """The swept keys a table does not show, with the values each shown row sets."""
    hidden = [d for d in all_dims if d not in dims]
    notes: dict[str, list[str]] = {}
    for g in groups:
        label = ", ".join(format_value(g.values[d]) for d in dims)
        opts = [f"{d}={format_value(g.values[d])}" for d in hidden if g.values.get(d) is not None]
        if opts:
            notes.setdefault(", ".join(opts), []).append(label)
    return [f"{'; '.join(rows)}: {opts}" for opts, rows in notes.items()]


def baseline_spec(results: SweepResults, options: dict[str, Any]) -> dict[str, str]:
    """The baseline as {swept key: value text}: `compare: bn` means {compare_key: bn}; a mapping pins more keys."""
    compare = options["compare"]
    spec = dict(compare) if isinstance(compare, dict) else {str(options.get("compare_key") or "norm"): compare}
    if not spec:
        raise ConfigError("table.compare is an empty mapping; give a value (compare=bn) or {key: value, ...}")
    for key, value in spec.items():
        if key not in results.dims:
            raise ConfigError(f"table.compare: '{key}' is not a swept key of sweep '{results.sweep}'; "
                              f"swept: {', '.join(results.dims) or '(none)'}")
        values = sorted({format_value(g.values[key]) for g in results.groups})
        if format_value(value) not in values:
            raise ConfigError(f"table.compare: no configuration of sweep '{results.sweep}' has {key}={value}; "
                              f"values: {', '.join(values)}")
    return {k: format_value(v) for k, v in spec.items()}


def _matches(a: dict[str, Any], b: dict[str, Any], keys: list[str]) -> bool:
    """Same values on `keys`, a null on either side (a key that does not apply, e.g. GN's momentum) matching any."""
    return all(a[k] is None or b[k] is None or format_value(a[k]) == format_value(b[k]) for k in keys)


def _compare_cells(results: SweepResults, columns: list[Column], options: dict[str, Any],
                   labels: dict[str, str]) -> tuple[str, list[Cell]]:
    spec = baseline_spec(results, options)
    metric = options.get("compare_metric") or columns[0].key
    col = next((c for c in columns if c.key == metric), None) or column_spec(metric, labels)
    level = float(options.get("level", 0.95))
    if not 0 < level < 1:
        raise ConfigError(f"table.level must be in (0, 1), got {level}")

    is_base = [all(format_value(g.values[k]) == v for k, v in spec.items()) for g in results.groups]
    bases = [g for g, b in zip(results.groups, is_base, strict=True) if b]
    others = [d for d in results.dims if d not in spec]
    cells: list[Cell | None] = []
    comparisons = []  # (row index, Comparison) of the rows with a difference to show
    for g, base_row in zip(results.groups, is_base, strict=True):
        if base_row:
            cells.append(Cell("text", "baseline"))
            continue
        found = [b for b in bases if _matches(g.values, b.values, others)]
        if len(found) != 1:
            cells.append(Cell("text", "ambiguous") if found else Cell("empty"))
            continue
        mine, theirs = dict(g.metric_values(metric)), dict(found[0].metric_values(metric))
        if not mine or not theirs:
            cells.append(Cell("empty"))
            continue
        comparisons.append((len(cells), compare_seeds(theirs, mine, level)))
        cells.append(None)
    # The family of the multiple-comparison guard: every difference in this table with a p-value.
    adjusted = holm_adjust([c.p_value for _, c in comparisons])
    for (i, c), p_holm in zip(comparisons, adjusted, strict=True):
        cells[i] = Cell("delta", mean=format_number(c.mean, col, signed=True),
                        n=c.n, show_n=not (c.n == len(results.seeds) and c.method == PAIRED),
                        low=None if c.low is None else format_number(c.low, col, signed=True),
                        high=None if c.high is None else format_number(c.high, col, signed=True),
                        halfwidth=None if c.high is None or c.low is None else format_number((c.high - c.low) / 2, col),
                        method=c.method, n_baseline=c.n_baseline, p_holm=p_holm,
                        significant=p_holm is not None and p_holm <= 1 - level)
    what = ", ".join(f"{labels.get(k, DIM_LABELS.get(k, k))}={v}" for k, v in spec.items())
    header = f"Δ {col.label} vs {what} (± {level * 100:g}% CI)"
    return header, cast(list[Cell], cells)  # every None was filled above


def write_tables(results: SweepResults, options: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes `table.md` and `table.tex` under `out_dir`; returns their paths."""
    table = build_table(results, options)
    return [write_text_atomic(Path(out_dir) / "table.md", render_markdown(table)),
            write_text_atomic(Path(out_dir) / "table.tex", render_latex(table))]
