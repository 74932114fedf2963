"""The short result summary printed after a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# (record field, label, format); a row is shown when the record has the field (null: n/a). The precise-statistics
# accuracy and the running-statistics calibration stand beside test accuracy: they are what normbench measures.
ROWS = [
    ("train_acc", "train accuracy (eval mode)", "{:.4f}"),
    ("test_acc", "test accuracy (eval mode)", "{:.4f}"),
    ("test_acc_precise", "test accuracy, precise statistics", "{:.4f}"),
    ("precise_gain", "precise - running-statistics gain", "{:+.4f}"),
    ("acc_gap", "train - test gap", "{:+.4f}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("test_loss", "test loss", "{:.4f}"),
    ("calib_kl", "calibration: KL(population || EMA)", "{:.4f}"),
    ("calib_mean_rel_err", "calibration: mean rel. error", "{:.4f}"),
    ("calib_var_log_ratio", "calibration: |log var ratio|", "{:.4f}"),
    ("test_ece", "test ECE (predictions)", "{:.4f}"),
    ("examples_per_sec", "training examples/s", "{:,.0f}"),
    ("wall_s", "wall time (s)", "{:.1f}"),
]
ALWAYS = ("train_acc", "test_acc", "acc_gap", "train_loss", "test_loss", "examples_per_sec", "wall_s")


def title_lines(summary: dict[str, Any]) -> list[str]:
    """The table's title, one phrase a line (a narrow terminal never breaks one in the middle)."""
    epochs = summary.get("epochs")
    return [f"{summary.get('model')} + {summary.get('norm')} on {summary.get('dataset')}",
            f"batch {summary.get('batch_size')}, {epochs} epoch{'' if epochs == 1 else 's'}, "
            f"seed {summary.get('seed')}"]


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    lines = title_lines(summary)
    # as wide as the longest title line, so that rich does not wrap the title to the columns' width
    table = Table(title="\n".join(escape(line) for line in lines), show_header=False,
                  min_width=min(console.width, max(map(len, lines)) + 2))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, fmt in ROWS:
        if key not in summary and key not in ALWAYS:
            continue
        value = summary.get(key)
        table.add_row(label, "n/a" if value is None else fmt.format(value))
    if summary.get("status") != "ok":
        table.add_row("status", f"[red]{summary.get('status')}[/red] at epoch {summary.get('diverged_at_epoch')}")
    console.print(table)
    layers = summary.get("norm_layers")
    if layers:  # what each layer kind computed: norm=in is LayerNorm after fully connected layers
        console.print("norm layers: " + ", ".join(f"{kind} {escape(str(name))}" for kind, name in layers.items()))
    for name, reason in (summary.get("measurement_errors") or {}).items():
        console.print(f"[yellow]measurement {escape(name)} failed (its figures are null in the record): "
                      f"{escape(reason)}[/yellow]")
    console.print(f"record: {summary.get('out_dir')}/summary.json")
