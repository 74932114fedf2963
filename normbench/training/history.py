"""How the run's callbacks share the per-epoch record and add to the run record, explicitly.

`train()` makes one `EpochHistory` and attaches it to every `RecordPart` callback. The evaluator starts each
epoch's entry and then publishes it: every attached part's `epoch_evaluated` runs right after, whatever the
order of the callbacks (the measurements add their per-epoch figures to the entry, a sweep's pruner reads
the objective from it). After training each part's `summary()` gives its fields of the run record; every
field is declared in `normbench.record`, and an entry keeps only the fields declared per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L

from normbench import record

Listener = Callable[[L.Trainer, L.LightningModule, dict[str, Any]], None]


class EpochHistory:
    """The run's per-epoch entries (the record's `history`) and whether training diverged."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.diverged_at_epoch: int | None = None
        self.diverged_reason: str | None = None
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Calls `listener(trainer, pl_module, entry)` after every published epoch."""
        self._listeners.append(listener)

    def start(self, epoch: int, figures: dict[str, Any]) -> dict[str, Any]:
        """Opens the entry of `epoch` with `figures` (the evaluator's); returns it."""
        entry = {"epoch": epoch}
        entry.update(_per_epoch(figures))
        self.entries.append(entry)
        return entry

    def publish(self, trainer: L.Trainer, pl_module: L.LightningModule, entry: dict[str, Any]) -> None:
        """Hands the finished evaluation of an epoch to every listener."""
        for listener in self._listeners:
            listener(trainer, pl_module, entry)

    def add(self, epoch: int, figures: dict[str, Any]) -> None:
        """Adds the per-epoch fields among `figures` to the entry of `epoch` (none when it has no entry)."""
        entry = self.entry(epoch)
        if entry is not None:
            entry.update(_per_epoch(figures))

    def entry(self, epoch: int) -> dict[str, Any] | None:
        return next((e for e in reversed(self.entries) if e.get("epoch") == epoch), None)

    def latest(self) -> dict[str, Any] | None:
        return self.entries[-1] if self.entries else None

    def diverge(self, epoch: int, reason: str) -> None:
        self.diverged_at_epoch, self.diverged_reason = epoch, reason

    @property
    def diverged(self) -> bool:
        return self.diverged_at_epoch is not None


def _per_epoch(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k in PER_EPOCH}


PER_EPOCH = frozenset(record.names(per_epoch=True))


class RecordPart(L.Callback):
    """A callback that adds fields to the run record and may follow the per-epoch history.

    `train()` calls `attach` before training and `summary` after it; a failing `summary` is recorded in
    `measurement_errors` and the run is kept.
    """

    history: EpochHistory | None = None

    def attach(self, history: EpochHistory) -> None:
        """Gives the part the run's history and subscribes its `epoch_evaluated`."""
        self.history = history
        history.subscribe(self.epoch_evaluated)

    def epoch_evaluated(self, trainer: L.Trainer, pl_module: L.LightningModule, entry: dict[str, Any]) -> None:
        """Runs once per epoch, right after the evaluator recorded the epoch's `entry`."""

    def summary(self) -> dict[str, Any]:
        """This part's fields of the run record (each declared in normbench.record)."""
        return {}
