"""Callbacks that measure: training throughput, and the per-epoch evaluation that opens each history entry."""

from __future__ import annotations

import math
import time
from typing import Any, cast

import lightning as L
import torch

from normbench import record
from normbench.data import InMemoryData
from normbench.metrics import evaluate
from normbench.training.chunks import batches_of
from normbench.training.history import EpochHistory, RecordPart
from normbench.training.module import Classifier


def _sync(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class ThroughputMonitor(RecordPart):
    """Training examples per second, counting only the training steps of each epoch.

    An epoch's clock runs from `on_train_epoch_start` to the end of its last optimizer step, so it
    includes batch fetching and Lightning's loop overhead but not the end-of-epoch evaluation. Put it
    first in the callback list so its epoch-end hook runs before the evaluators'.

    With `compiled=True` each Lightning batch (a chunk of steps, `normbench.training.chunks`) is also timed on
    its own, and a batch during which torch compiled (its compilation-event count grew) is counted in
    `compile_s` / `compile_steps` (all the chunk's steps) and left out of `examples_per_sec`: the compile
    time is reported separately from the steady-state rate.
    """

    def __init__(self, compiled: bool = False) -> None:
        self.examples = 0
        self.seconds = 0.0
        self._start = 0.0
        self.compiled = compiled
        self.compile_s = 0.0
        self.compile_steps = 0
        self.compile_examples = 0
        self._step_start = 0.0
        self._events = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.compiled:
            self._events = compile_events()
            self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = cast(Classifier, pl_module).last_batch_examples  # a chunk's steps can stop early (max_steps)
        self.examples += n
        if self.compiled and compile_events() != self._events:
            _sync(pl_module)
            self.compile_s += time.perf_counter() - self._step_start
            self.compile_steps += len(batches_of(batch))
            self.compile_examples += n

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self.seconds += time.perf_counter() - self._start

    def state_dict(self) -> dict[str, Any]:  # saved in checkpoints: a resumed run counts on
        return {"examples": self.examples, "seconds": self.seconds, "compile_s": self.compile_s,
                "compile_steps": self.compile_steps, "compile_examples": self.compile_examples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.examples, self.seconds = int(state_dict["examples"]), float(state_dict["seconds"])
        self.compile_s = float(state_dict.get("compile_s", 0.0))
        self.compile_steps = int(state_dict.get("compile_steps", 0))
        self.compile_examples = int(state_dict.get("compile_examples", 0))

    @property
    def examples_per_sec(self) -> float:
        seconds = self.seconds - self.compile_s
        return (self.examples - self.compile_examples) / seconds if seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"examples_per_sec": self.examples_per_sec, "train_time_s": self.seconds,
                "train_examples_seen": self.examples, "compiled": self.compiled,
                "compile_s": self.compile_s, "compile_steps": self.compile_steps}


def compile_events() -> int:
    """How many compilation phases torch has timed in this process (grows while torch.compile compiles)."""
    from torch._dynamo.utils import compilation_time_metrics

    return sum(len(v) for v in compilation_time_metrics.values())


# A run diverged when an epoch's mean training loss (batch statistics, as the optimizer saw it) is not
# finite, or exceeds DIVERGENCE_FACTOR times the loss of the very first batch (before any update: about
# ln(classes) for a fresh classifier). Eval-mode losses are not used: small-batch BN legitimately shows
# large eval losses while training well. Observed on LeNet-BN, synthetic data: lr 10 peaks at 4x the
# initial loss in its first epoch and recovers; lr 1e3 sits at about 500x, lr 1e6 at 3 million x.
DIVERGENCE_FACTOR = 10.0


def divergence(train_loss: float, initial_loss: float | None) -> str | None:
    """Why an epoch with mean training loss `train_loss` counts as diverged, or None when it does not."""
    if not math.isfinite(train_loss):
        return "training loss not finite"
    if initial_loss is not None and not math.isfinite(initial_loss):
        return "initial training loss not finite"
    if initial_loss is not None and train_loss > DIVERGENCE_FACTOR * initial_loss:
        return f"training loss {train_loss:.3g} > {DIVERGENCE_FACTOR:g} x the initial {initial_loss:.3g}"
    return None


class EpochEvaluator(RecordPart):
    """At each epoch end: eval-mode loss/accuracy on the training and test sets (and validation split).

    Opens the epoch's entry of the run's `EpochHistory` and publishes it to the other parts, logs it, and
    stops training when the run diverged (see `divergence`): the history says when and why.
    """

    def __init__(self, data: InMemoryData, eval_batch_size: int, max_batches: int | None = None) -> None:
        self.data = data
        self.eval_batch_size = eval_batch_size
        self.max_batches = max_batches  # the first batches of each split only (trainer.fast_dev_run: 1)
        self.initial_loss: float | None = None

    def _eval(self, module: L.LightningModule, split: str) -> tuple[float, float]:
        result = evaluate(cast(Classifier, module).net,
                          self.data.loader(split, self.eval_batch_size, max_batches=self.max_batches))
        return result.loss, result.acc

    def state_dict(self) -> dict[str, Any]:
        """The run's history so far (saved in checkpoints: a resumed run appends to it)."""
        history = self.history or EpochHistory()
        return {"entries": history.entries, "diverged_at_epoch": history.diverged_at_epoch,
                "diverged_reason": history.diverged_reason, "initial_loss": self.initial_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = self.history
        if history is None:  # pragma: no cover - train() attaches the history before fit
            raise RuntimeError("EpochEvaluator needs an EpochHistory (RecordPart.attach) before a checkpoint loads")
        history.entries[:] = [dict(e) for e in state_dict["entries"]]
        history.diverged_at_epoch = state_dict["diverged_at_epoch"]
        history.diverged_reason = state_dict["diverged_reason"]
        self.initial_loss = state_dict["initial_loss"]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = self.history
        if history is None:  # pragma: no cover - train() attaches the run's history
            raise RuntimeError("EpochEvaluator needs an EpochHistory (RecordPart.attach) before training")
        epoch = trainer.current_epoch + 1
        run_loss, run_acc = cast(Classifier, pl_module).epoch_train_stats()
        figures: dict[str, Any] = {"train_loss_running": run_loss, "train_acc_running": run_acc}
        lr = getattr(pl_module, "last_step_lr", None)  # the schedule's rate at the epoch's last step
        if lr is not None:
            figures["epoch_lr"] = lr
        self.initial_loss = getattr(pl_module, "initial_loss", None)
        reason = divergence(run_loss, self.initial_loss)
        if reason is not None:
            history.diverge(epoch, reason)
            trainer.should_stop = True
            history.publish(trainer, pl_module, history.start(epoch, figures))
            return
        figures["train_loss"], figures["train_acc"] = self._eval(pl_module, "train")
        figures["test_loss"], figures["test_acc"] = self._eval(pl_module, "test")
        figures["acc_gap"] = figures["train_acc"] - figures["test_acc"]
        if self.data.val_x is not None:
            figures["val_loss"], figures["val_acc"] = self._eval(pl_module, "val")
        entry = history.start(epoch, figures)
        has_logger = bool(trainer.loggers)
        # `epoch` as in summary.json (1-based): given here, it replaces the 0-based one Lightning would add
        pl_module.log_dict({k: float(v) for k, v in entry.items() if k != "test_acc"},
                           on_epoch=True, prog_bar=False, logger=has_logger)
        pl_module.log("test_acc", entry["test_acc"], prog_bar=True, logger=has_logger)
        history.publish(trainer, pl_module, entry)

    def summary(self) -> dict[str, Any]:
        history = self.history or EpochHistory()
        out: dict[str, Any] = {"history": history.entries, "diverged_at_epoch": history.diverged_at_epoch,
                               "diverged_reason": history.diverged_reason, "initial_loss": self.initial_loss}
        final: dict[str, Any] = next((h for h in reversed(history.entries) if "test_acc" in h), {})
        for key in FINAL_KEYS:
            if key in final:
                out[key] = final[key]
        return out


# The evaluator's per-epoch fields whose last value is also the run's (top level of the record).
FINAL_KEYS = record.names(writer="evaluator", per_epoch=True, run=True)
