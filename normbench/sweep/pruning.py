"""Reports each epoch's validation metric to the Optuna trial and stops the run when the pruner says so.

optuna-integration's PyTorchLightningPruningCallback listens to `on_validation_end`, which never runs
here: normbench evaluates in `EpochEvaluator.on_train_epoch_end` (eval mode, no Lightning validation
loop), and raising `TrialPruned` from a hook would also lose the run's summary. This callback follows the
run's per-epoch history instead (train() attaches it) and asks Lightning to stop, so a pruned run still
writes summary.json.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from normbench.training.history import RecordPart


class PruningCallback(RecordPart):
    """Follows the epoch's history entry the evaluator publishes (pass it to train(callbacks=...)).

    Args:
        trial: the running Optuna trial.
        monitor: a per-epoch field of the record (e.g. val_acc).
        prune: False reports the values but never stops (e.g. the seeds repeated for a kept configuration).
    """

    def __init__(self, trial: Any, monitor: str, prune: bool = True) -> None:
        self.trial = trial
        self.monitor = monitor
        self.prune = prune
        self.pruned_at_epoch: int | None = None

    def epoch_evaluated(self, trainer: L.Trainer, pl_module: L.LightningModule, entry: dict[str, Any]) -> None:
        value = entry.get(self.monitor)
        if value is None or not math.isfinite(value):  # diverged epochs are handled by the evaluator
            return
        self.trial.report(float(value), step=int(entry["epoch"]))
        if self.prune and self.trial.should_prune():
            self.pruned_at_epoch = int(entry["epoch"])
            trainer.should_stop = True

    def summary(self) -> dict[str, Any]:
        return {"pruned_at_epoch": self.pruned_at_epoch}
