"""Paper figures from a stored sweep (matplotlib, PNG and PDF under `<results_dir>/<sweep>/figures/`).

Figures (each skipped, with the reason printed, when the sweep lacks what it needs):
    acc_vs_batch       test accuracy vs batch size (log2 x), one line per norm (and per value of the other
                       swept keys), a band of ± one std over seeds: the Group Normalization paper's Figure 1.
    gap_vs_batch       the train-test accuracy gap vs batch size, same layout.
    calib_vs_momentum  running-statistics calibration error vs BN momentum (log x).
    ema_vs_precise     per-epoch test accuracy with the running (EMA) statistics (solid) and with precise
                       population statistics (dashed), one colour per configuration.

Options (the sweep file's `report:` mapping, or `report.<key>=...` on the command line):
    figures: which of the above to draw (default: all).
    batch_key / momentum_key: the swept keys for the x axes (default data.batch_size, norm.momentum).
    calib_metric: the calibration summary field (default calib_mean_rel_err).
    ema_metric / precise_metric: per-epoch history fields (default test_acc_ema, else test_acc; and
        test_acc_precise).
    formats: file formats (default [png, pdf]).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from normbench.errors import ConfigError
from normbench.records import write_bytes_atomic
from normbench.report.study import ConfigGroup, SweepResults, sort_key
from normbench.report.tables import DIM_LABELS, format_value

FIGURES = ["acc_vs_batch", "gap_vs_batch", "calib_vs_momentum", "ema_vs_precise"]
FORMATS = ("png", "pdf", "svg")

REPORT_OPTIONS: dict[str, Any] = {
    "figures": None,
    "batch_key": "data.batch_size",
    "momentum_key": "norm.momentum",
    "calib_metric": "calib_mean_rel_err",
    "ema_metric": "test_acc_ema",
    "precise_metric": "test_acc_precise",
    "formats": ["png", "pdf"],
    "project": "normbench",  # the W&B project and entity of the dashboard
    "entity": None,
    "mode": "auto",  # dashboard: auto | online | offline
}

# Metadata that would change on every save (creation dates) is dropped so a figure regenerates identically.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}}


@dataclass
class Figure:
    """A drawn figure (`fig`), or why it was skipped (`skipped`)."""

    name: str
    title: str
    fig: Any = None
    skipped: str | None = None


def _palette(n_series: int) -> list:
    """The default 10 colours, or 20 distinguishable ones when there are more lines than 10."""
    from matplotlib import colormaps

    name, n = ("tab10", 10) if n_series <= 10 else ("tab20", 20)
    return [colormaps[name](i) for i in range(n)]


def _new_figure(n_series: int = 0):
    # The object-oriented API draws without pyplot's global state or a GUI backend.
    from cycler import cycler
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(5.2, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_prop_cycle(cycler(color=_palette(n_series)))
    return fig, ax


def _legend(fig, ax, inside_max: int = 6) -> None:
    """A legend inside the axes for a few lines; outside on the right, widening the figure, for many."""
    n = len(ax.get_legend_handles_labels()[0])
    if n <= inside_max:
        ax.legend(fontsize=8)
        return
    ncol = -(-n // 24)
    fig.set_size_inches(fig.get_figwidth() + 2.2 * ncol, max(fig.get_figheight(), 0.16 * min(n, 24) + 1))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=7, ncol=ncol)


def _series_label(values: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = values.get(k)
        if v is None:
            continue
        parts.append(str(v) if k == "norm" else f"{DIM_LABELS.get(k, k)}={format_value(v)}")
    return ", ".join(parts) or "all"


def _series(results: SweepResults, x_key: str) -> dict[str, list[ConfigGroup]]:
    """Groups with a non-null x, keyed by the label of their other swept values (one line each)."""
    others = [d for d in results.dims if d != x_key]
    out: dict[str, list[ConfigGroup]] = {}
    for g in results.groups:
        if g.values.get(x_key) is None:
            continue
        out.setdefault(_series_label(g.values, others), []).append(g)
    return out


def _line_vs(results: SweepResults, x_key: str, metric: str, scale: float, ylabel: str, name: str, title: str,
             log_base: float = 2) -> Figure:
    if x_key not in results.dims:
        return Figure(name, title, skipped=f"sweep '{results.sweep}' does not sweep {x_key}")
    series = _series(results, x_key)
    fig, ax = _new_figure(len(series))
    drawn = 0
    ticks: set[float] = set()
    for label, groups in series.items():
        pts = []
        for g in sorted(groups, key=lambda g: sort_key(g.values[x_key])):
            vals = [v * scale for _, v in g.metric_values(metric)]
            if vals:
                x = float(g.values[x_key])
                pts.append((x, float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0))
                ticks.add(x)
        if not pts:
            continue
        x, m, s = (np.array(c) for c in zip(*pts, strict=True))
        (line,) = ax.plot(x, m, marker="o", label=label)
        ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        return Figure(name, title, skipped=f"no finished run recorded {metric}")
    ax.set_xscale("log", base=log_base)
    if log_base == 2:
        from matplotlib.ticker import FixedLocator, NullLocator

        ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([format_value(int(t) if float(t).is_integer() else t) for t in sorted(ticks)])
    ax.set_xlabel("batch size" if x_key == "data.batch_size" else DIM_LABELS.get(x_key, x_key))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return Figure(name, title, fig)


def acc_vs_batch(results: SweepResults, opts: dict[str, Any]) -> Figure:
    return _line_vs(results, opts["batch_key"], "test_acc", 100, "test accuracy (%)", "acc_vs_batch",
                    "Test accuracy vs batch size (mean ± std over seeds)")


def gap_vs_batch(results: SweepResults, opts: dict[str, Any]) -> Figure:
    return _line_vs(results, opts["batch_key"], "acc_gap", 100, "train - test accuracy (pp)", "gap_vs_batch",
                    "Train-test gap vs batch size (mean ± std over seeds)")


def calib_vs_momentum(results: SweepResults, opts: dict[str, Any]) -> Figure:
    metric = opts["calib_metric"]
    return _line_vs(results, opts["momentum_key"], metric, 1, metric.replace("_", " "), "calib_vs_momentum",
                    "Running-stats calibration error vs BN momentum", log_base=10)


def _epoch_curve(group: ConfigGroup, key: str, fallback: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over the group's ok seeds of history[key] per epoch (epochs every seed recorded)."""
    per_seed = []
    for seed in sorted(group.by_seed, key=sort_key):
        t = group.by_seed[seed]
        if t.outcome != "ok":
            continue
        hist = (t.summary or {}).get("history") or []
        pts = {}
        for h in hist:
            v = h.get(key, h.get(fallback) if fallback else None)
            if isinstance(v, (int, float)) and "epoch" in h:
                pts[int(h["epoch"])] = float(v)
        if pts:
            per_seed.append(pts)
    if not per_seed:
        return None
    epochs = sorted(set.intersection(*(set(p) for p in per_seed)))
    if not epochs:
        return None
    return np.array(epochs), np.array([np.mean([p[e] for p in per_seed]) for e in epochs])


def ema_vs_precise(results: SweepResults, opts: dict[str, Any]) -> Figure:
    name, title = "ema_vs_precise", "Test accuracy per epoch: EMA (solid) vs precise (dashed) statistics"
    curves = []
    for g in results.groups:
        precise = _epoch_curve(g, opts["precise_metric"])
        ema = _epoch_curve(g, opts["ema_metric"], fallback="test_acc")
        if precise is not None and ema is not None:
            curves.append((g, ema, precise))
    fig, ax = _new_figure(len(curves))
    drawn = 0
    colors = _palette(len(curves))
    for i, (g, ema, precise) in enumerate(curves):
        color = colors[i % len(colors)]
        label = _series_label(g.values, results.dims)
        ax.plot(ema[0], ema[1] * 100, color=color, marker="o", markersize=3, label=label)
        ax.plot(precise[0], precise[1] * 100, color=color, linestyle="--", marker="s", markersize=3)
        drawn += 1
    if not drawn:
        return Figure(name, title, skipped=f"no run recorded {opts['precise_metric']} per epoch in its history")
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return Figure(name, title, fig)


BUILDERS: dict[str, Callable[[SweepResults, dict[str, Any]], Figure]] = {
    "acc_vs_batch": acc_vs_batch,
    "gap_vs_batch": gap_vs_batch,
    "calib_vs_momentum": calib_vs_momentum,
    "ema_vs_precise": ema_vs_precise,
}


def selected(opts: dict[str, Any]) -> list[str]:
    names = opts.get("figures") or FIGURES
    if isinstance(names, str):
        names = [names]
    for n in names:
        if n not in BUILDERS:
            raise ConfigError(f"unknown figure '{n}' in report.figures; accepted: {', '.join(FIGURES)}")
    return list(names)


def build_figures(results: SweepResults, opts: dict[str, Any]) -> list[Figure]:
    """Draws the selected figures (see the module docstring for `opts`)."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "normbench", "pdf.compression": 6}):
        return [BUILDERS[n](results, opts) for n in selected(opts)]


def render(fig: Any, fmt: str) -> bytes:
    """The figure's bytes in `fmt`, without volatile metadata."""
    import matplotlib

    if fmt not in FORMATS:
        raise ConfigError(f"unknown figure format '{fmt}'; accepted: {', '.join(FORMATS)}")
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "normbench"}):
        fig.savefig(buf, format=fmt, dpi=200, metadata=_METADATA[fmt])
    return buf.getvalue()


def write_figures(results: SweepResults, opts: dict[str, Any], out_dir: Path) -> tuple[list[Path], list[Figure]]:
    """Writes every drawable figure in each format under `out_dir`; returns (paths, skipped figures)."""
    formats = opts.get("formats") or ["png", "pdf"]
    if isinstance(formats, str):
        formats = [formats]
    paths, skipped = [], []
    for f in build_figures(results, opts):
        if f.fig is None:
            skipped.append(f)
            continue
        for fmt in formats:
            paths.append(write_bytes_atomic(Path(out_dir) / f"{f.name}.{fmt}", render(f.fig, fmt)))
    return paths, skipped
