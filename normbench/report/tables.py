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
    columns: metrics to show, names of summary fields or mappings {key, label, scale, digits, better};
        default test_acc, acc_gap, test_acc_precise, calib_kl, examples_per_sec (those no run recorded
        are left out and named in the footer).
    compare: the baseline value of `compare_key` for the paired comparison (null: no comparison).
    compare_key: the swept key the baseline is chosen on (default `norm`).
    compare_metric: the metric compared (default: the first column).
    level: the confidence level of the interval (default 0.95).
    labels: {swept key or metric: header label} overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.records import write_text_atomic
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


KNOWN_COLUMNS = {c.key: c for c in [
    Column("test_acc", "test acc (%)", 100, 2, "max"),
    Column("train_acc", "train acc (%)", 100, 2, "max"),
    Column("acc_gap", "train-test gap (pp)", 100, 2, "absmin"),
    Column("test_acc_precise", "test acc, precise stats (%)", 100, 2, "max"),
    Column("test_acc_ema", "test acc, EMA stats (%)", 100, 2, "max"),
    Column("test_acc_batch", "test acc, batch stats (%)", 100, 2, "max"),
    Column("val_acc", "val acc (%)", 100, 2, "max"),
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
}

OUTCOME_ORDER = ["failed", "diverged", "pruned", "running", "queued", "missing"]


COLUMN_FIELDS = ("key", "label", "scale", "digits", "better")
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
        base = column_spec(entry["key"], labels)
        better = entry.get("better", base.better)
        if better not in (None, "max", "min", "absmin"):
            raise ConfigError(f"table.columns '{base.key}': better must be max, min, absmin or null; got {better!r}")
        scale = entry.get("scale", base.scale)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
            raise ConfigError(f"table.columns '{base.key}': scale must be a finite, non-zero number (e.g. 100 for "
                              f"percent); got {scale!r}")
        digits = entry.get("digits", base.digits)
        if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= MAX_DIGITS:
            raise ConfigError(f"table.columns '{base.key}': digits must be an integer in [0, {MAX_DIGITS}]; "
                              f"got {digits!r}")
        return Column(base.key, str(entry.get("label", base.label)), float(scale), digits, better)
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


@dataclass(frozen=True)
class Table:
    headers: list[str]
    align: list[str]  # l | r per column
    rows: list[list[Cell]]
    footer: list[str]


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
    labels = options.get("labels") or {}
    columns, requested = table_columns(options)
    footer_extra = []
    if not requested:  # defaults that no run recorded (e.g. calibration not measured) are left out, and said so
        present = [c for c in columns if any(g.metric_values(c.key) for g in results.groups)]
        absent = [c.key for c in columns if c not in present]
        columns = present or columns[:1]
        if absent:
            footer_extra.append(f"not recorded by any run: {', '.join(absent)}")

    groups = results.groups
    stats = {c.key: [SeedStats.of([v for _, v in g.metric_values(c.key)]) for g in groups] for c in columns}
    best = {c.key: _best_rows(c, stats[c.key]) for c in columns}

    headers = [labels.get(d, DIM_LABELS.get(d, d)) for d in results.dims]
    align = ["l"] * len(results.dims)
    for c in columns:
        headers.append(c.label)
        align.append("r")

    compare = options.get("compare")
    delta_cells: list[Cell] | None = None
    if compare is not None:
        delta_header, delta_cells = _compare_cells(results, columns, options, labels)
        headers.append(delta_header)
        align.append("r")
    headers.append("seeds ok")
    align.append("l")

    rows = []
    for i, g in enumerate(groups):
        row = [Cell("text", format_value(g.values[d])) for d in results.dims]
        for c in columns:
            s = stats[c.key][i]
            if s.mean is None:
                row.append(Cell("empty"))
            else:
                row.append(Cell("stat", mean=_fmt(s.mean, c), std=None if s.std is None else _fmt(s.std, c), n=s.n,
                                bold=i in best[c.key]))
        if delta_cells is not None:
            row.append(delta_cells[i])
        row.append(_seed_cell(g, results.seeds))
        rows.append(row)

    return Table(headers, align, rows, _footer(results, options, rows, footer_extra))


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
        cells[i] = Cell("delta", mean=_fmt(c.mean, col, signed=True), n=c.n,
                        low=None if c.low is None else _fmt(c.low, col, signed=True),
                        high=None if c.high is None else _fmt(c.high, col, signed=True),
                        method=c.method, n_baseline=c.n_baseline, p_holm=p_holm,
                        significant=p_holm is not None and p_holm <= 1 - level)
    what = ", ".join(f"{labels.get(k, DIM_LABELS.get(k, k))}={v}" for k, v in spec.items())
    header = f"Δ {col.label} vs {what} [{level * 100:g}% CI]"
    return header, cells  # type: ignore[return-value] - every None was filled above


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _compare_footer(deltas: list[Cell], level: float) -> list[str]:
    """What the Δ column computed: the interval method(s), what n counts, and the multiple-comparison guard."""
    pct = f"{level * 100:g}%"
    methods = {c.method for c in deltas}
    lines = [f"Δ: difference to the baseline row with a {pct} Student-t CI; a swept key that is null on either "
             "row (does not apply) matches any value."]
    if PAIRED in methods or not methods:
        lines.append("(n): paired t on the per-seed differences over the n seeds both finished (n - 1 df).")
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
        "Cells: mean ± std over the seeds that finished (n); best per column in bold.",
    ]
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


def _md_cell(cell: Cell) -> str:
    if cell.kind == "empty":
        return "–"
    if cell.kind == "text":
        return _md_escape(cell.text)
    if cell.kind == "stat":
        body = cell.mean if cell.std is None else f"{cell.mean} ± {cell.std}"
        return f"{f'**{body}**' if cell.bold else body} ({cell.n})"
    return delta_text(cell, cell.mean, cell.low, cell.high, "†")


def delta_text(cell: Cell, mean: str, low: str | None, high: str | None, mark: str) -> str:
    """A Δ cell as text (numbers already in the format's notation): `mean [low, high]† (n)` or `(n vs m)`."""
    ci = f" [{low}, {high}]" if low is not None else " [no CI]"
    n = f"{cell.n} vs {cell.n_baseline}" if cell.method == WELCH else f"{cell.n}"
    return f"{mean}{ci}{mark if cell.significant else ''} ({n})"


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
                "†": r"$^\dagger$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_num(text: str) -> str:
    # A text-mode hyphen is too short for a minus sign; numbers are typeset with a math minus.
    return ("$-$" + text[1:]) if text.startswith("-") else ("$+$" + text[1:]) if text.startswith("+") else text


def _tex_bold(text: str) -> str:
    return "\\textbf{" + text + "}"


def _tex_cell(cell: Cell) -> str:
    if cell.kind == "empty":
        return "--"
    if cell.kind == "text":
        return tex_escape(cell.text)
    if cell.kind == "stat":
        body = _tex_num(cell.mean) if cell.std is None else f"{_tex_num(cell.mean)} $\\pm$ {cell.std}"
        return f"{_tex_bold(body) if cell.bold else body} ({cell.n})"
    return delta_text(cell, _tex_num(cell.mean), None if cell.low is None else _tex_num(cell.low),
                       None if cell.high is None else _tex_num(cell.high), "$^\\dagger$")


def render_latex(table: Table) -> str:
    """A booktabs `tabular` (needs `\\usepackage{booktabs}`) with the footer as a final spanning row."""
    ncol = len(table.headers)
    lines = [
        "% Generated by `python -m normbench table` from the stored study; do not edit by hand.",
        "% Needs \\usepackage{booktabs}.",
        f"\\begin{{tabular}}{{{''.join(table.align)}}}",
        "\\toprule",
        " & ".join(tex_escape(h) for h in table.headers) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(_tex_cell(c) for c in row) + " \\\\" for row in table.rows]
    lines.append("\\bottomrule")
    lines += [f"\\multicolumn{{{ncol}}}{{l}}{{\\footnotesize {tex_escape(f)}}} \\\\" for f in table.footer]
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


def write_tables(results: SweepResults, options: dict[str, Any], out_dir: Path) -> list[Path]:
    """Writes `table.md` and `table.tex` under `out_dir`; returns their paths."""
    table = build_table(results, options)
    return [write_text_atomic(Path(out_dir) / "table.md", render_markdown(table)),
            write_text_atomic(Path(out_dir) / "table.tex", render_latex(table))]
