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

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.records import write_text_atomic
from normbench.report.metrics import error_key
from normbench.report.stats import PAIRED, WELCH, SeedStats, compare_seeds, holm_adjust
from normbench.report.study import SweepResults


@dataclass(frozen=True)
class Column:
    """How a metric is shown: summary key, header label, display scale, decimals, which way is better."""

    key: str
    label: str
    scale: float = 1.0
    digits: int = 4
    better: str | None = None  # max | min | absmin | None (no bold)
    relative_to: dict[str, Any] | None = None  # shown relative to the mean of the matching baseline row


KNOWN_COLUMNS = {c.key: c for c in [
    Column("test_acc", "test acc (%)", 100, 2, "max"),
    Column("train_acc", "train acc (%)", 100, 2, "max"),
    Column("acc_gap", "train-test gap (pp)", 100, 2, "absmin"),
    Column("test_acc_precise", "test acc, precise stats (%)", 100, 2, "max"),
    Column("test_acc_ema", "test acc, EMA stats (%)", 100, 2, "max"),
    Column("test_acc_batch", "test acc, batch stats (%)", 100, 2, "max"),
    Column("test_acc_adabn", "test acc, AdaBN test-set stats (%)", 100, 2, "max"),
    Column("test_acc_weighted", "test acc, example weighing (%)", 100, 2, "max"),
    Column("val_acc", "val acc (%)", 100, 2, "max"),
    Column("train_acc_running", "train acc, batch stats, during the epoch (%)", 100, 2, "max"),
    Column("train_acc_batch", "train acc, batch stats (%)", 100, 2, "max"),
    Column("precise_gain", "precise - EMA test acc (pp)", 100, 2, "max"),
    Column("test_ece", "test ECE", 1, 4, "min"),
    *[Column(f"test_ece_{m}", f"test ECE, {label}", 1, 4, "min") for m, label in
      (("ema", "EMA stats"), ("precise", "precise stats"), ("batch", "batch stats"), ("adabn", "AdaBN"),
       ("weighted", "example weighing"))],
    Column("ema_horizon_samples", "EMA horizon (samples)", 1, 0, None),
    Column("test_loss", "test loss", 1, 4, "min"),
    Column("calib_kl", "calib. KL", 1, 4, "min"),
    Column("calib_mean_rel_err", "calib. mean rel. err", 1, 4, "min"),
    Column("calib_var_log_ratio", "calib. var log-ratio", 1, 4, "absmin"),
    Column("examples_per_sec", "examples/s", 1, 0, "max"),
    Column("wall_s", "wall time (s)", 1, 1, "min"),
    Column("lr", "effective lr", 1, 5, None),
]}

DEFAULT_COLUMNS = ["test_acc", "acc_gap", "test_acc_precise", "calib_kl", "examples_per_sec"]

DIM_LABELS = {
    "norm": "norm",
    "model": "model",
    "data": "dataset",
    "data.batch_size": "batch",
    "norm.momentum": "BN momentum",
    "trainer.accumulate_grad_batches": "accum.",
    "optim.lr": "lr",
}

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

OUTCOME_ORDER = ["failed", "diverged", "pruned", "running", "queued", "missing"]


COLUMN_FIELDS = ("key", "label", "scale", "digits", "better", "relative_to")
MAX_DIGITS = 12


def column_spec(entry: Any, labels: dict[str, str]) -> Column:
    """A Column from a sweep-file entry: a summary key, or a mapping {key, label, scale, digits, better}."""
    if isinstance(entry, str):
        base = KNOWN_COLUMNS.get(entry, Column(entry, entry))
        return Column(base.key, labels.get(entry, base.label), base.scale, base.digits, base.better)
    if isinstance(entry, dict) and isinstance(entry.get("key"), str):
        unknown = set(entry) - set(COLUMN_FIELDS)
        if unknown:
            raise ConfigError(f"table.columns entry {entry} has unknown field(s) {', '.join(sorted(unknown))}; "
                              f"accepted: {', '.join(COLUMN_FIELDS)}")
        relative = entry.get("relative_to")
        if relative is not None and not isinstance(relative, dict):
            raise ConfigError(f"table.columns '{entry['key']}': relative_to must be a mapping {{key: value}}, "
                              f"got {relative!r}")
        base = column_spec(entry["key"], labels)
        better = entry.get("better", base.better)
        if better not in (None, "max", "min", "absmin"):
            raise ConfigError(f"table.columns '{base.key}': better must be max, min, absmin or null; got {better!r}")
        scale = entry.get("scale", 1.0 if relative else base.scale)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
            raise ConfigError(f"table.columns '{base.key}': scale must be a finite, non-zero number (e.g. 100 for "
                              f"percent); got {scale!r}")
        digits = entry.get("digits", base.digits)
        if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= MAX_DIGITS:
            raise ConfigError(f"table.columns '{base.key}': digits must be an integer in [0, {MAX_DIGITS}]; "
                              f"got {digits!r}")
        return Column(base.key, str(entry.get("label", base.label)), float(scale), digits, better, relative)
    raise ConfigError(f"table.columns entries are metric names or mappings with a 'key'; got {entry!r}")


def table_columns(options: dict[str, Any]) -> tuple[list[Column], bool]:
    """The requested columns (or the defaults) and whether they were requested; ConfigError on a bad spec."""
    labels = options.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"table.labels must be a mapping {{key: label}}, got {labels!r}")
    requested = options.get("columns")
    if isinstance(requested, (str, dict)):
        requested = [requested]
    if requested is not None and not isinstance(requested, list):
        raise ConfigError(f"table.columns must be a list of metric names or {{{', '.join(COLUMN_FIELDS)}}} "
                          f"mappings (e.g. [test_acc, acc_gap]); got {requested!r}")
    entries = list(requested) if requested else list(DEFAULT_COLUMNS)
    return [column_spec(e, labels) for e in entries], bool(requested)


def metric_column(col: Column, metric: str | None) -> Column:
    """`col` as an error column when `metric` is error and it shows an accuracy (test_acc -> test error)."""
    if metric in (None, "accuracy"):
        return col
    if metric != "error":
        raise ConfigError(f"table.metric must be accuracy or error, got {metric!r}")
    key = error_key(col.key)
    if key == col.key:
        return col
    label = col.label.replace("accuracy", "error").replace("acc", "error")
    return Column(key, label, col.scale, col.digits, "min", col.relative_to)


def filter_results(results: SweepResults, where: Any) -> SweepResults:
    """`results` with only the configurations matching `where` ({swept key: value})."""
    if not where:
        return results
    if not isinstance(where, dict):
        raise ConfigError(f"table.where must be a mapping {{swept key: value}}, got {where!r}")
    for k in where:
        if k not in results.dims:
            raise ConfigError(f"table.where: '{k}' is not a swept key of '{results.sweep}'; "
                              f"swept: {', '.join(results.dims) or '(none)'}")
    groups = [g for g in results.groups if all(format_value(g.values.get(k)) == format_value(v)
                                               for k, v in where.items())]
    if not groups:
        raise ConfigError(f"table.where {where} matches no configuration of '{results.sweep}'")
    return replace(results, groups=groups)


# ---------------------------------------------------------------- the table model (format-free)


@dataclass(frozen=True)
class Cell:
    """One table cell; `parts` are rendered by each format (numbers, ±, CI brackets, plain text).

    Delta cells also carry the comparison `method` (stats.PAIRED or stats.WELCH), the baseline's seed count
    `n_baseline` (shown for Welch), the Holm-adjusted p-value `p_holm` and `significant` (p_holm <= 1 - level).
    """

    kind: str  # text | stat | delta | empty
    text: str = ""
    mean: str = ""
    std: str | None = None
    n: int | None = None
    low: str | None = None
    high: str | None = None
    bold: bool = False
    method: str | None = None
    n_baseline: int | None = None
    p_holm: float | None = None
    significant: bool = False
    halfwidth: str | None = None  # a delta shown as mean ± the interval's half-width
    show_n: bool = True  # False when n is every seed of the study (the footer says so once)


@dataclass(frozen=True)
class Table:
    headers: list[str]
    align: list[str]  # l | r per column
    rows: list[list[Cell]]
    footer: list[str]
    caption: str = ""


def _fmt(value: float, col: Column, signed: bool = False) -> str:
    """`value` in display units at the column's precision; a value that rounds to zero shows no minus."""
    v = value * col.scale
    text = f"{v:+,.{col.digits}f}" if signed else f"{v:,.{col.digits}f}"
    if text.startswith("-") and float(text[1:].replace(",", "")) == 0:
        text = ("+" if signed else "") + text[1:]
    return text


def format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


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
    shown = {i: float(_fmt(s.mean, col).replace(",", "")) for i, s in enumerate(stats) if s.mean is not None}
    if len(shown) < 2:
        return set()
    score = {"max": lambda v: -v, "min": lambda v: v, "absmin": abs}[col.better]
    best = min(score(v) for v in shown.values())
    return {i for i, v in shown.items() if score(v) == best}


def build_table(results: SweepResults, options: dict[str, Any]) -> Table:
    """The format-free table for `results` with the `table:` options (see the module docstring)."""
    layout = options.get("layout") or "long"
    if layout == "pivot":
        from normbench.report.pivot import build_pivot

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
                row.append(Cell("stat", mean=_fmt(s.mean, c), std=None if s.std is None else _fmt(s.std, c), n=s.n,
                                show_n=not every,
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
    return Table(headers, align, rows, _footer(results, options, rows, footer_extra),
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
            row.append(Cell("text", _fmt(float(v), c)) if v is not None else Cell("empty"))
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
        cells[i] = Cell("delta", mean=_fmt(c.mean, col, signed=True),
                        n=c.n, show_n=not (c.n == len(results.seeds) and c.method == PAIRED),
                        low=None if c.low is None else _fmt(c.low, col, signed=True),
                        high=None if c.high is None else _fmt(c.high, col, signed=True),
                        halfwidth=None if c.high is None else _fmt((c.high - c.low) / 2, col),
                        method=c.method, n_baseline=c.n_baseline, p_holm=p_holm,
                        significant=p_holm is not None and p_holm <= 1 - level)
    what = ", ".join(f"{labels.get(k, DIM_LABELS.get(k, k))}={v}" for k, v in spec.items())
    header = f"Δ {col.label} vs {what} (± {level * 100:g}% CI)"
    return header, cells  # type: ignore[return-value] - every None was filled above


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _compare_footer(deltas: list[Cell], level: float) -> list[str]:
    """What the Δ column computed: the interval method(s), what n counts, and the multiple-comparison guard."""
    pct = f"{level * 100:g}%"
    methods = {c.method for c in deltas}
    lines = [f"Δ: difference to the baseline row ± the half-width of its {pct} Student-t CI; a swept key that is "
             "null on either row (does not apply) matches any value."]
    if PAIRED in methods or not methods:
        lines.append("Paired t on the per-seed differences over the seeds both finished (n - 1 df; n shown when "
                     "not every seed).")
    if WELCH in methods:
        lines.append("(n vs m): Welch's unpaired t between this row's n and the baseline's m seeds (the seeds do "
                     "not pair up).")
    if any(c.low is None for c in deltas):
        lines.append("No CI: fewer than 2 values.")
    tested = sum(c.p_holm is not None for c in deltas)
    if tested:
        alpha = f"{(1 - level) * 100:.3g}%"
        lines.append(f"†: nonzero at a family-wise error rate of {alpha} (Holm's correction over the {tested} "
                     "differences in this table).")
    return lines


def _footer(results: SweepResults, options: dict[str, Any], rows: list[list[Cell]], extra: list[str]) -> list[str]:
    counts = results.outcome_counts()
    total = sum(counts.values())
    runs = ", ".join(f"{counts[o]} {o}" for o in ["ok", *OUTCOME_ORDER] if counts.get(o)) or "none"
    others = sorted(o for o in counts if o != "ok" and o not in OUTCOME_ORDER)
    if others:
        runs += ", " + ", ".join(f"{counts[o]} {o}" for o in others)
    shas = results.git_shas()
    newest = results.newest_completion()
    lines = [
        f"sweep {results.sweep}: {_count(len(results.groups), 'configuration')} × {_count(len(results.seeds), 'seed')}"
        f" = {_count(total, 'run')} ({runs}).",
    ]
    if not options.get("_pivot"):
        lines.append(f"Cells: mean ± std over the {len(results.seeds)} seeds (fewer finished where (n) is shown); "
                     "best per column in bold.")
    if options.get("compare") is not None:
        lines.extend(_compare_footer([c for row in rows for c in row if c.kind == "delta"],
                                     float(options.get("level", 0.95))))
        if any(c.kind == "text" and c.text == "ambiguous" for row in rows for c in row):
            lines.append("Ambiguous: several baseline rows match; pin more keys, e.g. "
                         "table.compare={norm: bn, norm.momentum: 0.1}.")
    lines.extend(f"{e[0].upper()}{e[1:]}." for e in extra)
    lines.append(f"git {', '.join(shas) if shas else 'unknown'}{' (mixed versions!)' if len(shas) > 1 else ''}"
                 f" · config {results.config_hash()}"
                 f" · results of {newest.strftime('%Y-%m-%d %H:%M') if newest else 'unknown date'}")
    return lines


# ---------------------------------------------------------------- renderers


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _n_text(cell: Cell) -> str:
    if cell.n is None or not cell.show_n:
        return ""
    return f" ({cell.n} vs {cell.n_baseline})" if cell.method == WELCH else f" ({cell.n})"


def _md_cell(cell: Cell) -> str:
    if cell.kind == "empty":
        return "–"
    if cell.kind == "text":
        return _md_escape(cell.text)
    if cell.kind == "stat":
        body = cell.mean if cell.std is None else f"{cell.mean} ± {cell.std}"
        return f"{f'**{body}**' if cell.bold else body}{_n_text(cell)}"
    return delta_text(cell, cell.mean, cell.low, cell.high, "†")


def delta_text(cell: Cell, mean: str, low: str | None, high: str | None, mark: str, pm: str = " ± ") -> str:
    """A Δ cell as text (numbers already in the format's notation): `mean ± half†`, else `mean [low, high]†`,
    then `(n)` or `(n vs m)` (Welch) where not every seed entered."""
    if cell.halfwidth is not None:
        ci = f"{pm}{cell.halfwidth}"
    else:
        ci = f" [{low}, {high}]" if low is not None else " [no CI]"
    return f"{mean}{ci}{mark if cell.significant else ''}{_n_text(cell)}"


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with the footer as an italic paragraph."""
    sep = {"l": ":---", "r": "---:"}
    lines = ["| " + " | ".join(_md_escape(h) for h in table.headers) + " |",
             "| " + " | ".join(sep[a] for a in table.align) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    for line in table.footer:
        lines += ["", f"_{_md_escape(line)}_"]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$", "×": r"$\times$", "Δ": r"$\Delta$", "–": "--", "·": r"$\cdot$",
                "†": r"$^\dagger$", "−": r"$-$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_num(text: str) -> str:
    # A text-mode hyphen is too short for a minus sign; numbers are typeset with a math minus.
    return ("$-$" + text[1:]) if text.startswith("-") else ("$+$" + text[1:]) if text.startswith("+") else text


def _tex_bold(text: str) -> str:
    return "\\textbf{" + text + "}"


def _tex_cell(cell: Cell, stacked: bool = False) -> str:
    """A cell's LaTeX; `stacked`: `mean` over `± spread` in two lines (a table too wide for the page)."""
    if cell.kind == "empty":
        return "--"
    if cell.kind == "text":
        return tex_escape(cell.text)
    if cell.kind == "stat":
        mean = _tex_num(cell.mean)
        if cell.std is None:
            lines = [mean]
        elif stacked:
            lines = [mean, f"$\\pm$ {cell.std}"]
        else:
            lines = [f"{mean} $\\pm$ {cell.std}"]
        if cell.bold:
            lines = [_tex_bold(x) for x in lines]
        lines[-1] += _n_text(cell)
        return _tex_stack(lines)
    text = delta_text(cell, _tex_num(cell.mean), None if cell.low is None else _tex_num(cell.low),
                      None if cell.high is None else _tex_num(cell.high), "$^\\dagger$",
                      "\n$\\pm$ " if stacked else " $\\pm$ ")
    return _tex_stack(text.split("\n"))


def _tex_stack(lines: list[str]) -> str:
    return lines[0] if len(lines) == 1 else "\\begin{tabular}[t]{@{}r@{}}" + " \\\\ ".join(lines) + "\\end{tabular}"


# Widths of a standard two-column `article` (10pt, letter): what a paper's table has to fit.
COLUMN_WIDTH_PT = 229.0
TEXT_WIDTH_PT = 469.0
_CHAR_PT = 4.1  # an average \footnotesize character of the table's text (measured: 3.5-4.3pt)
_COLSEP_PT = 8.0  # 2 x \tabcolsep of 4pt
STACK_ABOVE = 1.1  # estimated width / text width above which numbers are stacked (the estimate runs high)


def _plain(cell: Cell) -> str:
    return _md_cell(cell).replace("**", "")


def _header_lines(header: str, width: int) -> list[str]:
    """A header broken at spaces into lines no wider than its column's cells (at least 8 characters)."""
    limit = max(width, 8)
    lines: list[str] = []
    for word in header.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= limit:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def latex_layout(table: Table, stacked: bool = False) -> tuple[list[list[str]], float]:
    """Each header's lines and the table's estimated natural width in points (\\footnotesize).

    `stacked`: numeric cells as `mean` over `± spread` (the wider of the two lines counts).
    """
    def width(cell: Cell) -> int:
        text = _plain(cell)
        if stacked and cell.kind in ("stat", "delta"):
            return max(len(part) + 2 for part in text.split(" ± "))
        return len(text)

    widths = [max([width(row[i]) for row in table.rows] or [0]) for i in range(len(table.headers))]
    headers = [_header_lines(h, w) for h, w in zip(table.headers, widths, strict=True)]
    total = sum((max(w, *(len(x) for x in h)) * _CHAR_PT + _COLSEP_PT) for w, h in zip(widths, headers, strict=True))
    return headers, total


def _tex_header(lines: list[str], align: str) -> str:
    if len(lines) == 1:
        return tex_escape(lines[0])
    body = " \\\\ ".join(tex_escape(x) for x in lines)
    return f"\\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{body}\\end{{tabular}}"


def render_latex(table: Table, label: str | None = None) -> str:
    """A booktabs table float that fits a two-column paper (needs `\\usepackage{booktabs}`).

    Long headers are broken over lines; the float is `table` (\\columnwidth) when the estimated width
    fits a column, else `table*` (\\textwidth); a table estimated wider than the text puts each number's
    spread under its mean (two-line cells). A tabular still wider than the line (many columns) is
    scaled down to it, and says so on the terminal ("normbench: table scaled"). The footer is a paragraph
    under the rule. A test compiles every committed table with pdflatex: no overfull box, no scaling.
    """
    headers, width = latex_layout(table)
    # Too wide for the page even as table*: numbers go on two lines (mean over ± spread).
    stacked = width > STACK_ABOVE * TEXT_WIDTH_PT
    if stacked:
        headers, width = latex_layout(table, stacked=True)
    env = "table" if width <= 0.97 * COLUMN_WIDTH_PT else "table*"
    lines = [
        "% Generated by normbench from stored results; do not edit by hand.",
        "% Needs \\usepackage{booktabs,graphicx}.",
        f"\\begin{{{env}}}[t]",
        "\\centering",
        "\\footnotesize",
        "\\setlength{\\tabcolsep}{4pt}",
    ]
    if table.caption:
        lines.append(f"\\caption{{{tex_escape(table.caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [
        f"\\sbox0{{\\begin{{tabular}}{{{''.join(table.align)}}}",
        "\\toprule",
        " & ".join(_tex_header(h, a) for h, a in zip(headers, table.align, strict=True)) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(_tex_cell(c, stacked) for c in row) + " \\\\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}}%",
              "\\ifdim\\wd0>\\linewidth\\typeout{normbench: table scaled to the line width}%",
              "\\resizebox{\\linewidth}{!}{\\usebox0}\\else\\usebox0\\fi",
              "\\par\\smallskip",
              "\\parbox{\\linewidth}{\\scriptsize\\raggedright"]
    lines += [tex_escape(f) + ("\\par" if i < len(table.footer) - 1 else "") for i, f in enumerate(table.footer)]
    lines += ["}", f"\\end{{{env}}}"]
    return "\n".join(lines) + "\n"


def write_tables(results: SweepResults, options: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes `table.md` and `table.tex` under `out_dir`; returns their paths."""
    table = build_table(results, options)
    return [write_text_atomic(Path(out_dir) / "table.md", render_markdown(table)),
            write_text_atomic(Path(out_dir) / "table.tex", render_latex(table))]
