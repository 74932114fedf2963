"""Progress when the output is not a terminal: one line per epoch instead of a redrawn progress bar.

Lightning's progress bar redraws itself with carriage returns; piped to a file it becomes one long line
of updates (41 KB for the default 10-epoch run). `EpochLines` prints, after each evaluated epoch, one
line such as `epoch 3/10  train_loss 0.4321  train_acc 0.8432  test_acc 0.8311  (12.3 s)` on stderr
(where the bar would go), so a log stays readable and stdout keeps only the result table.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L

from normbench.training.history import RecordPart

SHOWN = ("train_loss", "train_acc", "val_acc", "test_acc")


def use_epoch_lines(stream: TextIO | None = None) -> bool:
    """True when the progress stream is not an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return True


class EpochLines(RecordPart):
    """Prints one line per evaluated epoch (global rank 0 only) on `stream` (default: stderr)."""

    def __init__(self, max_epochs: int, stream: TextIO | None = None) -> None:
        self.max_epochs = max_epochs
        self.stream = stream
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def epoch_evaluated(self, trainer: L.Trainer, pl_module: L.LightningModule, entry: dict[str, Any]) -> None:
        if not trainer.is_global_zero:
            return
        figures = "  ".join(f"{k} {entry[k]:.4f}" for k in SHOWN if isinstance(entry.get(k), (int, float)))
        line = f"epoch {entry.get('epoch')}/{self.max_epochs}  {figures}  ({time.perf_counter() - self._t0:.1f} s)"
        print(line, file=self.stream or sys.stderr, flush=True)
