"""Callbacks that measure: training throughput, and per-epoch evaluation into the run history."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch

from normbench.data import InMemoryData
from normbench.metrics import evaluate


def _sync(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class ThroughputMonitor(L.Callback):
    """Training examples per second, counting only the training steps of each epoch.

    An epoch's clock runs from `on_train_epoch_start` to the end of its last optimizer step, so it
    includes batch fetching and Lightning's loop overhead but not the end-of-epoch evaluation. Put it
    first in the callback list so its epoch-end hook runs before the evaluators'.
    """

    def __init__(self) -> None:
        self.examples = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.examples += int(batch[1].shape[0])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self.seconds += time.perf_counter() - self._start

    @property
    def examples_per_sec(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"examples_per_sec": self.examples_per_sec, "train_time_s": self.seconds,
                "train_examples_seen": self.examples}


class EpochEvaluator(L.Callback):
    """At each epoch end: eval-mode loss/accuracy on the training and test sets (and validation split).

    Appends one record per epoch to `history`, logs it, and stops training when the loss is no longer
    finite (`diverged_at_epoch`).
    """

    def __init__(self, data: InMemoryData, eval_batch_size: int) -> None:
        self.data = data
        self.eval_batch_size = eval_batch_size
        self.history: list[dict[str, Any]] = []
        self.diverged_at_epoch: int | None = None

    def _eval(self, module: L.LightningModule, split: str) -> tuple[float, float]:
        return evaluate(module.net, self.data.loader(split, self.eval_batch_size))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        run_loss, run_acc = pl_module.epoch_train_stats()
        record: dict[str, Any] = {"epoch": epoch, "train_loss_running": run_loss, "train_acc_running": run_acc}
        if not math.isfinite(run_loss):
            self.diverged_at_epoch = epoch
            trainer.should_stop = True
            self.history.append(record)
            return
        record["train_loss"], record["train_acc"] = self._eval(pl_module, "train")
        record["test_loss"], record["test_acc"] = self._eval(pl_module, "test")
        record["acc_gap"] = record["train_acc"] - record["test_acc"]
        if self.data.val_x is not None:
            record["val_loss"], record["val_acc"] = self._eval(pl_module, "val")
        self.history.append(record)
        has_logger = bool(trainer.loggers)
        pl_module.log_dict({k: float(v) for k, v in record.items() if k not in ("epoch", "test_acc")},
                           on_epoch=True, prog_bar=False, logger=has_logger)
        pl_module.log("test_acc", record["test_acc"], prog_bar=True, logger=has_logger)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"history": self.history, "diverged_at_epoch": self.diverged_at_epoch}
        final = next((h for h in reversed(self.history) if "test_acc" in h), {})
        for key in ("train_acc", "test_acc", "acc_gap", "train_loss", "test_loss", "val_acc", "val_loss",
                    "train_loss_running", "train_acc_running"):
            if key in final:
                out[key] = final[key]
        return out
