"""Paper figures from stored results: a data model (`FigureData`) drawn by one matplotlib renderer.

Every figure is first computed as data (panels of series: x, mean, interval bounds, labels), which is
what a study commits as `figures/<name>.json` (diff-friendly, compared by `reproduce --check`), then drawn.
Intervals are the Student-t 95% interval of the mean over seeds (none for a single seed). A figure that
would be degenerate (every series a single point, or nothing to draw) is skipped with the reason.

Kinds (study figures and the `plot` command both use them):
    metric_vs_x    a run metric against a swept numeric key (log2 axis with the real values as ticks, or
                   log10), one series per value of the `series` keys, interval bars and bands.
    epoch_curves   per-epoch history metrics (e.g. EMA vs precise test accuracy), one curve per
                   configuration and metric, interval bands over seeds.
    horizon        metrics against the EMA horizon in samples (batch / momentum), one series per batch
                   size, points labelled with the momentum in PyTorch and (Keras) convention, the default
                   momentum starred and the cumulative average (momentum null) drawn hollow.
    dot_plot       one row per configuration of `rows` (e.g. norms), the metric on x with interval bars,
                   one marker per value of `groups`, rows sorted by the value at group `sort`.

The `plot` command draws, from a sweep's `report:` options (or `report.<key>=...`):
    acc_vs_batch, gap_vs_batch (metric_vs_x over batch_key), calib_vs_momentum (metric_vs_x over
    momentum_key, log10), ema_vs_precise (epoch_curves of ema_metric and precise_metric);
    options figures, batch_key, momentum_key, calib_metric, ema_metric, precise_metric, formats.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from normbench.errors import ConfigError
from normbench.files import write_bytes_atomic
from normbench.report.metrics import epoch_values
from normbench.report.stats import t_interval
from normbench.report.study import ConfigGroup, SweepResults, sort_key
from normbench.report.table_model import DIM_LABELS, format_value

FIGURES = ["acc_vs_batch", "gap_vs_batch", "calib_vs_momentum", "ema_vs_precise"]
FORMATS = ("png", "pdf", "svg")
LEVEL = 0.95

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
    "artifact": True,  # dashboard: also log the tables, figures and page as the study's W&B artifact
}

# Metadata that would change on every save (creation dates) is dropped so a figure regenerates identically.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}}


# ---------------------------------------------------------------------------------------------- data model


@dataclass
class Series:
    """One line or marker set: y (mean over seeds) with interval bounds, per x."""

    label: str
    x: list[float]
    y: list[float]
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    n: list[int] | None = None
    color: int = 0  # index into the palette: the same label keeps its colour across panels
    linestyle: str = "-"
    marker: str = "o"
    hollow: list[bool] | None = None  # per point: drawn without fill (e.g. the cumulative average)
    starred: list[bool] | None = None  # per point: an extra star (e.g. the default momentum)
    annotations: list[str] | None = None  # per point: a small text label

    def add_point(self, x: float, y: float, low: float | None, high: float | None, n: int) -> None:
        """Appends a point with its interval to a series made with `low`, `high` and `n` lists."""
        assert self.low is not None and self.high is not None and self.n is not None
        self.x.append(x)
        self.y.append(y)
        self.low.append(low)
        self.high.append(high)
        self.n.append(n)


@dataclass
class Panel:
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xscale: str = "linear"  # linear | log2 | log10 | rows (dot plot: y is the row index)
    xticks: list[float] | None = None
    xticklabels: list[str] | None = None
    yticklabels: list[str] | None = None  # dot plot: the row labels, bottom to top
    # extra x axes above the panel: {label, numerator, ticks, ticklabels}; position = numerator / x
    # (the momentum of a batch size at a horizon x)
    top_axes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FigureData:
    name: str
    title: str
    panels: list[Panel]

    def to_json(self) -> str:
        """The figure's numbers, rounded to 10 significant digits, as stable JSON (a study's figures/*.json)."""
        return json.dumps(_rounded(asdict(self)), indent=1, sort_keys=True) + "\n"


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.10g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


@dataclass
class Figure:
    """A figure: its data and drawing (`data`, `fig`), or why it was skipped (`skipped`)."""

    name: str
    title: str
    fig: Any = None
    skipped: str | None = None
    data: FigureData | None = None


# ---------------------------------------------------------------------------------------------- statistics


def mean_interval(values: list[float], scale: float = 1.0) -> tuple[float, float | None, float | None, int]:
    """(mean, low, high, n) of `values` x scale with the Student-t interval (None bounds below 2 values)."""
    ci = t_interval([v * scale for v in values], LEVEL)
    return ci.mean, ci.low, ci.high, ci.n


def _label_of(values: dict[str, Any], keys: list[str], labels: dict[str, str] | None = None) -> str:
    parts = []
    for k in keys:
        v = values.get(k)
        if v is None:
            continue
        if k == "norm":
            parts.append(str(v))
        elif isinstance(v, bool):
            parts.append(f"{labels.get(k, DIM_LABELS.get(k, k)) if labels else DIM_LABELS.get(k, k)}"
                         f"{'' if v else ' off'}")
        else:
            parts.append(f"{(labels or {}).get(k, DIM_LABELS.get(k, k))}={format_value(v)}")
    return ", ".join(parts) or "all"


def _keys(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _y_scale(metric: str) -> tuple[float, str]:
    """Display scale and unit of a metric: accuracies, errors and gaps in %."""
    if "acc" in metric or "error" in metric or "gain" in metric:
        return 100.0, " (%)" if "gap" not in metric and "gain" not in metric else " (pp)"
    return 1.0, ""


def metric_label(metric: str) -> str:
    scale, unit = _y_scale(metric)
    return metric.replace("_", " ") + unit


# ---------------------------------------------------------------------------------------------- kinds


def metric_vs_x(results: SweepResults, name: str, title: str, x: str, metric: str, series: Any = None,
                xlabel: str | None = None, ylabel: str | None = None, log: int = 2,
                labels: dict[str, str] | None = None) -> Figure:
    """`metric` against the numeric swept key `x`, one series per value of the `series` keys."""
    if x not in results.dims:
        return Figure(name, title, skipped=f"'{results.sweep}' does not sweep {x}")
    keys = _keys(series) if series is not None else [d for d in results.dims if d != x]
    scale, _ = _y_scale(metric)
    by_label: dict[str, list[ConfigGroup]] = {}
    for g in results.groups:
        if _is_number(g.values.get(x)):
            by_label.setdefault(_label_of(g.values, keys, labels), []).append(g)
    panel = Panel(xlabel or DIM_LABELS.get(x, x), ylabel or metric_label(metric),
                  xscale="log2" if log == 2 else "log10" if log == 10 else "linear")
    ticks: set[float] = set()
    for i, (label, groups) in enumerate(by_label.items()):
        s = Series(label, [], [], [], [], [], color=i)
        for g in sorted(groups, key=lambda g: sort_key(g.values[x])):
            vals = [v for _, v in g.metric_values(metric)]
            if not vals:
                continue
            m, lo, hi, n = mean_interval(vals, scale)
            s.add_point(float(g.values[x]), m, lo, hi, n)
        if s.x:
            panel.series.append(s)
            ticks.update(s.x)
    if not panel.series:
        return Figure(name, title, skipped=f"no finished run recorded {metric}")
    if all(len(s.x) < 2 for s in panel.series):
        return Figure(name, title, skipped=f"every series has a single {x} value: nothing to draw a line through")
    if panel.xscale == "log2":
        panel.xticks = sorted(ticks)
        panel.xticklabels = [format_value(int(t) if float(t).is_integer() else t) for t in panel.xticks]
    return _drawn(FigureData(name, title, [panel]))


def _epoch_stats(group: ConfigGroup, key: str, fallback: str | None, scale: float) -> Series | None:
    per_seed = []
    for seed in sorted(group.by_seed, key=sort_key):
        t = group.by_seed[seed]
        if t.outcome == "ok" and t.summary:
            pts = epoch_values(t.summary, key, fallback)
            if pts:
                per_seed.append(pts)
    if not per_seed:
        return None
    epochs = sorted(set.intersection(*(set(p) for p in per_seed)))
    if len(epochs) < 2:
        return None
    s = Series("", [], [], [], [], [])
    for e in epochs:
        m, lo, hi, n = mean_interval([p[e] for p in per_seed], scale)
        s.add_point(float(e), m, lo, hi, n)
    return s


def epoch_curves(results: SweepResults, name: str, title: str, curves: list[str], series: Any = None,
                 labels: dict[str, str] | None = None, fallback: dict[str, str] | None = None,
                 ylabel: str | None = None) -> Figure:
    """Per-epoch history metrics: for each configuration (labelled by `series` keys) and each curve."""
    keys = _keys(series) if series is not None else list(results.dims)
    labels = labels or {}
    fallback = fallback or {}
    scale, _ = _y_scale(curves[0])
    panel = Panel("epoch", ylabel or metric_label(curves[0]))
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    for i, g in enumerate(results.groups):
        config = _label_of(g.values, keys)
        for j, key in enumerate(curves):
            s = _epoch_stats(g, key, fallback.get(key), scale)
            if s is None:
                continue
            what = labels.get(key, key.replace("_", " "))
            s.label = what if len(results.groups) == 1 else f"{config}: {what}"
            s.color = i if len(curves) == 1 or len(results.groups) > 1 else j
            s.linestyle = styles[j % len(styles)] if len(results.groups) > 1 else "-"
            s.marker = markers[j % len(markers)]
            panel.series.append(s)
    if not panel.series:
        return Figure(name, title, skipped=f"no run recorded {' or '.join(curves)} per epoch in its history")
    panel.xticks = sorted({x for s in panel.series for x in s.x})
    panel.xticklabels = [format_value(int(t)) for t in panel.xticks]
    return _drawn(FigureData(name, title, [panel]))


def horizon(results: SweepResults, name: str, title: str, metrics: list[str], series: str = "data.batch_size",
            momentum_key: str = "norm.momentum", default_momentum: float | None = 0.1,
            labels: dict[str, str] | None = None) -> Figure:
    """Metrics against ema_horizon_samples, one line per `series` value (a batch size).

    The top axes of the first panel give the momentum at each batch size in both conventions, PyTorch's
    and (Keras'); the default momentum is starred; the cumulative average (momentum null) is a hollow
    marker at its own horizon (every sample seen), not part of the line.
    """
    if momentum_key not in results.dims:
        return Figure(name, title, skipped=f"'{results.sweep}' does not sweep {momentum_key}")
    panels = []
    by_value: dict[Any, list[ConfigGroup]] = {}
    for g in results.groups:
        by_value.setdefault(g.values.get(series), []).append(g)
    ordered = sorted(by_value.items(), key=lambda kv: sort_key(kv[0]))
    for k, metric in enumerate(metrics):
        scale, _ = _y_scale(metric)
        panel = Panel("EMA horizon in samples = batch / momentum (log scale)", metric_label(metric), xscale="log10")
        for i, (value, groups) in enumerate(ordered):
            label = _label_of({series: value}, [series], labels)
            starred: list[bool] = []
            hollow: list[bool] = []
            line = Series(label, [], [], [], [], [], color=i, starred=starred)
            cumulative = Series(f"{label}, cumulative average", [], [], [], [], [], color=i, linestyle="none",
                                hollow=hollow)
            momenta = []
            for g in groups:
                vals = [v for _, v in g.metric_values(metric)]
                h = [v for _, v in g.metric_values("ema_horizon_samples")]
                if not (vals and h):
                    continue
                m, lo, hi, n = mean_interval(vals, scale)
                mom = g.values.get(momentum_key)
                target = cumulative if mom is None else line
                for attr, v in (("x", float(np.mean(h))), ("y", m), ("low", lo), ("high", hi), ("n", n)):
                    getattr(target, attr).append(v)
                if mom is None:
                    hollow.append(True)
                else:
                    momenta.append(float(mom))
                    starred.append(default_momentum is not None and abs(float(mom) - default_momentum) < 1e-12)
            order = np.argsort(line.x, kind="stable")
            for attr in ("x", "y", "low", "high", "n", "starred"):
                setattr(line, attr, [getattr(line, attr)[j] for j in order])
            if len(line.x) >= 2:
                panel.series.append(line)
            if cumulative.x:
                panel.series.append(cumulative)
            if k == 0 and _is_number(value) and momenta:
                panel.top_axes.append({
                    "label": f"momentum at {label}, PyTorch (Keras)", "numerator": float(value),
                    "ticks": sorted(set(momenta), reverse=True),
                    "ticklabels": [f"{m:g}\n({1 - m:.4g})" for m in sorted(set(momenta), reverse=True)]})
        if panel.series:
            panels.append(panel)
    if not panels:
        return Figure(name, title, skipped="no finished run recorded ema_horizon_samples and the metrics")
    return _drawn(FigureData(name, title, panels))


def dot_plot(results: SweepResults, name: str, title: str, rows: str, groups: str, metric: str,
             sort: Any = None, group_labels: dict[Any, str] | None = None, xlabel: str | None = None) -> Figure:
    """One row per value of `rows`, the metric on x with interval bars, one marker per value of `groups`."""
    for key in (rows, groups):
        if key not in results.dims:
            return Figure(name, title, skipped=f"'{results.sweep}' does not sweep {key}")
    scale, unit = _y_scale(metric)
    bounded = unit == " (%)"  # accuracies and errors: 0-100 %
    cells: dict[tuple[str, str], tuple[float, float | None, float | None, int]] = {}
    row_names: list[str] = []
    group_values: list[Any] = []
    for g in results.groups:
        r, c = format_value(g.values[rows]), g.values[groups]
        vals = [v for _, v in g.metric_values(metric)]
        if not vals:
            continue
        if r not in row_names:
            row_names.append(r)
        if c not in group_values:
            group_values.append(c)
        cells[(r, format_value(c))] = mean_interval(vals, scale)
    if len(row_names) < 2:
        return Figure(name, title, skipped="fewer than two rows with finished runs")
    sort_col = format_value(sort) if sort is not None else format_value(group_values[0])
    # worst at the bottom, best at the top (y grows upwards)
    row_names.sort(key=lambda r: -cells[(r, sort_col)][0] if (r, sort_col) in cells else float("-inf"))
    panel = Panel(xlabel or metric_label(metric), "", xscale="rows", yticklabels=row_names)
    markers = ["o", "s", "^", "D"]
    offsets = np.linspace(-0.15, 0.15, len(group_values)) if len(group_values) > 1 else [0.0]
    for i, c in enumerate(sorted(group_values, key=sort_key, reverse=True)):
        label = (group_labels or {}).get(c, (group_labels or {}).get(format_value(c), f"{groups}={format_value(c)}"))
        s = Series(str(label), [], [], [], [], [], color=i, marker=markers[i % len(markers)], linestyle="none")
        for j, r in enumerate(row_names):
            if (r, format_value(c)) in cells:
                m, lo, hi, n = cells[(r, format_value(c))]
                if bounded:  # a t-interval of a bimodal few-seed sample can pass 0 or 100 %: drawn to the bound
                    lo, hi = (None if lo is None else max(lo, 0.0)), (None if hi is None else min(hi, 100.0))
                s.add_point(float(j + offsets[i]), m, lo, hi, n)  # x: the row position; the metric is y (drawn swapped)
        panel.series.append(s)
    return _drawn(FigureData(name, title, [panel]))


# ---------------------------------------------------------------------------------------------- drawing


def _palette(n_series: int) -> list:
    from matplotlib import colormaps

    name, n = ("tab10", 10) if n_series <= 10 else ("tab20", 20)
    return [colormaps[name](i) for i in range(n)]


def _band(values: list[float | None] | None, fallback: list[float]) -> np.ndarray:
    if values is None:
        return np.array(fallback, dtype=float)
    return np.array([f if v is None else v for v, f in zip(values, fallback, strict=True)], dtype=float)


def draw(data: FigureData):
    """A matplotlib figure (object-oriented API: no pyplot state, no GUI backend) for `data`."""
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullLocator

    n_panels = len(data.panels)
    rows_panel = any(p.xscale == "rows" for p in data.panels)
    height = 0.32 * len(data.panels[0].yticklabels or []) + 1.4 if rows_panel else 3.4 * n_panels + 0.4
    fig = MplFigure(figsize=(5.6, max(3.2, height)), layout="constrained")
    axes = fig.subplots(n_panels, 1, squeeze=False)[:, 0]
    n_colors = max((s.color for p in data.panels for s in p.series), default=0) + 1
    colors = _palette(n_colors)
    for ax, panel in zip(axes, data.panels, strict=True):
        for s in panel.series:
            color = colors[s.color % len(colors)]
            x, y = np.array(s.x, dtype=float), np.array(s.y, dtype=float)
            lo, hi = _band(s.low, s.y), _band(s.high, s.y)
            if panel.xscale == "rows":  # dot plot: metric on x, rows on y
                ax.errorbar(y, x, xerr=[y - lo, hi - y], fmt=s.marker, color=color, label=s.label,
                            capsize=2, markersize=5)
                continue
            hollow = bool(s.hollow and all(s.hollow))
            ax.plot(x, y, linestyle=s.linestyle, marker=s.marker, color=color, label=s.label,
                    markersize=8 if hollow else 4, markerfacecolor="white" if hollow else color)
            if s.low is not None and any(v is not None for v in s.low):
                ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
                ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", ecolor=color, capsize=2, linewidth=0.8)
            for i in range(len(x)):
                if s.hollow and s.hollow[i] and not hollow:
                    ax.plot(x[i], y[i], marker="o", markersize=8, markerfacecolor="white", color=color)
                if s.starred and s.starred[i]:
                    ax.plot(x[i], y[i], marker="*", markersize=13, color=color, markeredgecolor="black",
                            markeredgewidth=0.5)
                if s.annotations:
                    ax.annotate(s.annotations[i], (x[i], y[i]), textcoords="offset points", xytext=(3, 5),
                                fontsize=6, color=color)
        if panel.xscale == "rows":
            ax.set_yticks(range(len(panel.yticklabels or [])), panel.yticklabels or [], fontsize=8)
            ax.set_ylim(-0.6, len(panel.yticklabels or []) - 0.4)
        elif panel.xscale in ("log2", "log10"):
            ax.set_xscale("log", base=2 if panel.xscale == "log2" else 10)
        if panel.xticks is not None and panel.xscale != "rows":
            ax.xaxis.set_major_locator(FixedLocator(panel.xticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels(panel.xticklabels or [format_value(t) for t in panel.xticks])
        elif panel.xscale == "linear":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for j, top in enumerate(panel.top_axes):
            # a twin x axis on the same log scale and limits, ticked at the horizons batch / momentum
            twin = ax.twiny()
            twin.set_xscale("log")
            twin.set_xlim(ax.get_xlim())
            twin.spines["top"].set_position(("axes", 1.0 + 0.24 * j))
            b = float(top["numerator"])
            twin.xaxis.set_major_locator(FixedLocator([b / m for m in top["ticks"]]))
            twin.xaxis.set_major_formatter(FixedFormatter(top["ticklabels"]))
            twin.xaxis.set_minor_locator(NullLocator())
            twin.tick_params(labelsize=6, pad=1)
            twin.set_xlabel(top["label"], fontsize=7, labelpad=2)
        ax.set_xlabel(panel.xlabel, fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        n_labels = len(ax.get_legend_handles_labels()[0])
        if n_labels and ax is axes[0]:
            ax.legend(fontsize=7, ncol=1 if n_labels <= 6 else 2)
    if data.title:
        axes[0].set_title(data.title, fontsize=9)
    return fig


def _drawn(data: FigureData) -> Figure:
    return Figure(data.name, data.title, fig=draw(data), data=data)


# ---------------------------------------------------------------------------------------------- the plot command


def acc_vs_batch(results: SweepResults, opts: dict[str, Any]) -> Figure:
    return metric_vs_x(results, "acc_vs_batch", "Test accuracy vs batch size (mean, 95% CI over seeds)",
                       opts["batch_key"], "test_acc", xlabel="batch size")


def gap_vs_batch(results: SweepResults, opts: dict[str, Any]) -> Figure:
    return metric_vs_x(results, "gap_vs_batch", "Train-test gap vs batch size (mean, 95% CI over seeds)",
                       opts["batch_key"], "acc_gap", xlabel="batch size")


def calib_vs_momentum(results: SweepResults, opts: dict[str, Any]) -> Figure:
    return metric_vs_x(results, "calib_vs_momentum", "Running-stats calibration error vs BN momentum",
                       opts["momentum_key"], opts["calib_metric"], log=10)


def ema_vs_precise(results: SweepResults, opts: dict[str, Any]) -> Figure:
    ema, precise = opts["ema_metric"], opts["precise_metric"]
    fig = epoch_curves(results, "ema_vs_precise", "Test accuracy per epoch: EMA (solid) vs precise (dashed)",
                       [ema, precise], labels={ema: "EMA", precise: "precise"}, fallback={ema: "test_acc"},
                       ylabel="test accuracy (%)")
    if fig.data is None or not any(s.label.endswith("precise") for s in fig.data.panels[0].series):
        return Figure("ema_vs_precise", fig.title, skipped=f"no run recorded {precise} per epoch in its history")
    return fig


BUILDERS: dict[str, Callable[[SweepResults, dict[str, Any]], Figure]] = {
    "acc_vs_batch": acc_vs_batch,
    "gap_vs_batch": gap_vs_batch,
    "calib_vs_momentum": calib_vs_momentum,
    "ema_vs_precise": ema_vs_precise,
}

# Study figure kinds: name -> (builder, accepted options besides name/part/kind/caption).
KINDS: dict[str, tuple[Callable[..., Figure], tuple[str, ...]]] = {
    "metric_vs_x": (metric_vs_x, ("x", "metric", "series", "xlabel", "ylabel", "log", "labels")),
    "epoch_curves": (epoch_curves, ("curves", "series", "labels", "fallback", "ylabel")),
    "horizon": (horizon, ("metrics", "series", "momentum_key", "default_momentum", "labels")),
    "dot_plot": (dot_plot, ("rows", "groups", "metric", "sort", "group_labels", "xlabel")),
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
    return [BUILDERS[n](results, opts) for n in selected(opts)]


def render(fig: Any, fmt: str) -> bytes:
    """The figure's bytes in `fmt`, without volatile metadata."""
    import matplotlib

    if fmt not in FORMATS:
        raise ConfigError(f"unknown figure format '{fmt}'; accepted: {', '.join(FORMATS)}")
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "normbench", "pdf.compression": 6}):
        fig.savefig(buf, format=fmt, dpi=200, metadata=_METADATA[fmt])
    return buf.getvalue()


def write_figure(f: Figure, out_dir: Path, formats: list[str], with_data: bool = False) -> list[Path]:
    """Writes a drawn figure in each format (and its data as <name>.json when `with_data`)."""
    paths = [write_bytes_atomic(Path(out_dir) / f"{f.name}.{fmt}", render(f.fig, fmt)) for fmt in formats]
    if with_data and f.data is not None:
        paths.append(write_bytes_atomic(Path(out_dir) / f"{f.name}.json", f.data.to_json().encode()))
    return paths


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
        paths += write_figure(f, out_dir, formats)
    return paths, skipped
