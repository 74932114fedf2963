"""The format-free table model shared by the table layouts (long: tables.py, pivot: pivot.py) and renderers.

Columns (which metric, how it is shown), cells and tables, number formatting, and the footer every table
states (runs and their outcomes, the method, the code version, a hash of the configurations, the date).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from normbench.errors import ConfigError
from normbench.report.metrics import error_key
from normbench.report.stats import PAIRED, WELCH
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


def format_number(value: float, col: Column, signed: bool = False) -> str:
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


def footer(results: SweepResults, options: dict[str, Any], rows: list[list[Cell]], extra: list[str]) -> list[str]:
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
