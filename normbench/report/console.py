"""The short result summary printed after a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROWS = [
    ("train_acc", "train accuracy (eval mode)", "{:.4f}"),
    ("test_acc", "test accuracy (eval mode)", "{:.4f}"),
    ("acc_gap", "train - test gap", "{:+.4f}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("test_loss", "test loss", "{:.4f}"),
    ("examples_per_sec", "training examples/s", "{:,.0f}"),
    ("wall_s", "wall time (s)", "{:.1f}"),
]


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    title = (f"{summary.get('model')} + {summary.get('norm')} on {summary.get('dataset')}, "
             f"batch {summary.get('batch_size')}, {summary.get('epochs')} epochs, seed {summary.get('seed')}")
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, fmt in ROWS:
        value = summary.get(key)
        table.add_row(label, "n/a" if value is None else fmt.format(value))
    if summary.get("status") != "ok":
        table.add_row("status", f"[red]{summary.get('status')}[/red] at epoch {summary.get('diverged_at_epoch')}")
    console.print(table)
    for name, reason in (summary.get("measurement_errors") or {}).items():
        console.print(f"[yellow]measurement {escape(name)} failed (its figures are null in the record): "
                      f"{escape(reason)}[/yellow]")
    console.print(f"record: {summary.get('out_dir')}/summary.json")
