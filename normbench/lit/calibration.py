"""Running-statistics calibration and the three-way accuracy split, measured during a run.

Every `calib.every_n_epochs` epochs (and always after the last one) `CalibrationMonitor` compares each
running-statistics layer's EMA with population statistics of the current weights
(`normbench.metrics.calibration`) and evaluates the test set with those population statistics
(precise BN). After training it adds the batch-statistics accuracies and the expected calibration
error of the predictions. Everything runs on deep copies; the trained model is not modified.

Figures (summary.json top level; the calib_* ones also per measured epoch in `history` and the logger,
the precise-BN test figures there too with `calib.precise_test_every_epoch=true`):
    calib_mean_rel_err, calib_var_log_ratio, calib_kl   mean over layers (`_worst`: the worst layer)
    test_acc_ema        test set, running statistics (eval mode; equals the evaluator's test_acc)
    test_acc_precise    test set, population statistics; precise_gain = test_acc_precise - test_acc_ema
    train_acc_batch     training set (no augmentation), batch statistics at the training batch size,
                        with the final weights: the model as it ran while training
    test_acc_batch      test set, batch statistics at the training batch size
    test_ece            expected calibration error (torchmetrics, L1, `calib.ece_bins` bins) of the
                        predictions behind test_acc
Norms without running statistics report null for the calibration figures, test_acc_ema,
test_acc_precise and precise_gain. `<out_dir>/calibration.json` holds the per-layer table per epoch.

Batches of the train-mode passes have the training batch size and a seeded random order (the population
pass: a fixed seeded subset of the training set, the same at every epoch); a trailing batch of one
sample is dropped (a batch-statistics norm cannot normalize it), so those figures may miss one sample.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from normbench.data import InMemoryData
from normbench.data.memory import BatchLoader
from normbench.metrics import evaluate
from normbench.metrics.calibration import Calibration, calibrate, evaluate_with_ece
from normbench.records import write_json_atomic

CALIBRATION_FILE = "calibration.json"
# Aggregate fields that do not change between epochs: in calibration.json and the summary, not the history.
RUN_CONSTANTS = ("calib_layers", "calib_samples")
SUMMARY_KEYS = ("calib_layers", "calib_mean_rel_err", "calib_mean_rel_err_worst", "calib_var_log_ratio",
                "calib_var_log_ratio_worst", "calib_kl", "calib_kl_worst", "calib_worst_layer", "calib_samples",
                "test_acc_ema", "test_acc_precise", "test_loss_precise", "precise_gain", "train_acc_batch",
                "test_acc_batch", "test_ece", "test_ece_precise", "recalibrated")
PRECISE_KEYS = ("test_acc_precise", "test_loss_precise", "test_ece_precise", "precise_gain")
# Measured once after training (the per-epoch figures are logged at each epoch end).
FINAL_LOGGED = ("test_acc_ema", "train_acc_batch", "test_acc_batch", "test_ece")


class CalibrationMonitor(L.Callback):
    """Measures running-statistics calibration per epoch and the accuracy split at the end of training.

    Args:
        data: the run's resident data.
        batch_size: the training (per-device micro-)batch size; train-mode passes use it.
        samples: training samples in the population-statistics pass (all when there are fewer).
        every_n_epochs: measure after every n-th epoch; the last epoch is always measured.
        recalibrate: report the population-statistics model's figures as the run's train/test
            accuracy and loss (the EMA figures stay beside them as `*_ema`).
        precise_test_every_epoch: also evaluate the test set with population statistics at every
            measured epoch (history: test_acc_precise, precise_gain), one test-set pass each; by
            default that pass runs once, after training.
        eval_batch_size: batch size of the eval-mode passes.
        seed: picks the calibration subset and the batch order of the train-mode passes.
        augment: apply the training augmentation in the population pass (the EMA saw augmented data).
        ece_bins: equal-width confidence bins of the ECE.
        out_dir: where calibration.json goes (None: not written).
        evaluator: the run's EpochEvaluator; per-epoch figures are added to its history records and
            its divergence flag stops the measurements.
    """

    def __init__(self, data: InMemoryData, batch_size: int, *, samples: int = 8192, every_n_epochs: int = 1,
                 recalibrate: bool = False, precise_test_every_epoch: bool = False, eval_batch_size: int = 1024,
                 seed: int = 0, augment: bool = False, ece_bins: int = 15, out_dir: Path | str | None = None,
                 evaluator: Any = None) -> None:
        self.data = data
        self.batch_size = batch_size
        self.samples = samples
        self.every_n_epochs = every_n_epochs
        self.recalibrate = recalibrate
        self.precise_test_every_epoch = precise_test_every_epoch
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.augment = augment
        self.ece_bins = ece_bins
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.evaluator = evaluator
        self.epochs: list[dict[str, Any]] = []  # calibration.json's entries
        self._final: dict[str, Any] = {}
        self._epoch = 0
        # (global_step, calibration, its aggregate, precise-test figures or None) of the latest measurement
        self._last: tuple[int, Calibration, dict[str, Any], dict[str, Any] | None] | None = None

    # -- batches -------------------------------------------------------------------------------------

    def _train_mode_loader(self, x: torch.Tensor, y: torch.Tensor, shuffle: bool, augment: bool = False):
        # min_batch=2: a trailing one-sample batch cannot be normalized with batch statistics
        return BatchLoader(x, y, self.batch_size, shuffle=shuffle, drop_last=False, min_batch=2, seed=self.seed,
                           augment=augment)

    def calibration_batches(self) -> BatchLoader:
        """The population pass's batches: a fixed seeded subset of `samples` training samples."""
        x, y = self.data.train_x, self.data.train_y
        if self.samples < len(x):
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))[: self.samples]
            idx = idx.to(x.device)
            x, y = x.index_select(0, idx), y.index_select(0, idx)
        return self._train_mode_loader(x, y, shuffle=False, augment=self.augment)

    def _test_batches(self):
        return self.data.loader("test", self.eval_batch_size)

    # -- measurements ---------------------------------------------------------------------------------

    def measure(self, net: nn.Module) -> Calibration:
        """Running-statistics calibration of `net` now (the population pass on a deep copy)."""
        return calibrate(net, self.calibration_batches())

    def precise_test(self, cal: Calibration, ema_test_acc: float | None) -> dict[str, Any]:
        """Test figures of the population-statistics model `cal.model` (all null without one)."""
        if cal.model is None:
            return dict.fromkeys(PRECISE_KEYS)
        precise = evaluate_with_ece(cal.model, self._test_batches(), self.data.num_classes, self.ece_bins)
        gain = precise["acc"] - ema_test_acc if ema_test_acc is not None else None
        return {"test_acc_precise": precise["acc"], "test_loss_precise": precise["loss"],
                "test_ece_precise": precise["ece"], "precise_gain": gain}

    def _measure_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> dict[str, Any]:
        """Measures, records the epoch in calibration.json and its history record; returns the aggregate."""
        cal = self.measure(pl_module.net)
        figures: dict[str, Any] = {**cal.aggregate, "calib_samples": cal.samples}
        self._last = (trainer.global_step, cal, figures, None)
        self.epochs.append({"epoch": epoch, "layers": cal.layers, "aggregate": figures})
        self._add_to_history(epoch, figures)
        if trainer.is_global_zero and self.out_dir is not None:
            write_json_atomic(self.out_dir / CALIBRATION_FILE, {"epochs": self.epochs})
        return figures

    def _add_precise(self, epoch: int, ema_test_acc: float | None) -> dict[str, Any]:
        step, cal, figures, precise = self._last
        if precise is None:
            precise = self.precise_test(cal, ema_test_acc)
            self._last = (step, cal, figures, precise)
            self._add_to_history(epoch, precise)
        return precise

    def _record(self, epoch: int) -> dict[str, Any] | None:
        """The evaluator's history record of `epoch` (eval-mode figures with the running statistics)."""
        history = getattr(self.evaluator, "history", None) or []
        return next((r for r in reversed(history) if r.get("epoch") == epoch), None)

    def _add_to_history(self, epoch: int, figures: dict[str, Any]) -> None:
        record = self._record(epoch)
        if record is not None:
            record.update({k: v for k, v in figures.items() if k not in RUN_CONSTANTS})

    def _diverged(self) -> bool:
        return getattr(self.evaluator, "diverged_at_epoch", None) is not None

    # -- hooks ----------------------------------------------------------------------------------------

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch = trainer.current_epoch + 1
        if self._diverged() or self._epoch % self.every_n_epochs:
            return
        figures = dict(self._measure_epoch(trainer, pl_module, self._epoch))
        if self.precise_test_every_epoch:
            ema = (self._record(self._epoch) or {}).get("test_acc")
            if ema is None:  # no evaluator: one extra eval-mode pass
                ema = evaluate(pl_module.net, self._test_batches())[1]
            figures.update(self._add_precise(self._epoch, ema))
        pl_module.log_dict(_loggable(figures), on_epoch=True, prog_bar=False, logger=bool(trainer.loggers))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch == 0 or self._diverged():
            return
        net = pl_module.net
        ema = evaluate_with_ece(net, self._test_batches(), self.data.num_classes, self.ece_bins)
        to_log: dict[str, Any] = {}
        if self._last is None or self._last[0] != trainer.global_step:  # last epoch not on the schedule
            to_log.update(self._measure_epoch(trainer, pl_module, self._epoch))
        precise = self._add_precise(self._epoch, ema["acc"])
        to_log.update(precise)
        _, cal, figures, _ = self._last
        has_stats = cal.model is not None
        final: dict[str, Any] = {
            **figures,
            **precise,
            "test_acc_ema": ema["acc"] if has_stats else None,
            "precise_gain": precise["test_acc_precise"] - ema["acc"] if has_stats else None,
            "train_acc_batch": self.batch_stats_accuracy(net, "train"),
            "test_acc_batch": self.batch_stats_accuracy(net, "test"),
            "test_ece": ema["ece"],
            "recalibrated": False,
        }
        if self.recalibrate and has_stats:
            record = self._record(self._epoch) or {}
            train_loss, train_acc = evaluate(cal.model, self.data.loader("train", self.eval_batch_size))
            final.update(test_acc=precise["test_acc_precise"], test_loss=precise["test_loss_precise"],
                         test_ece=precise["test_ece_precise"], train_acc=train_acc, train_loss=train_loss,
                         acc_gap=train_acc - precise["test_acc_precise"], train_acc_ema=record.get("train_acc"),
                         recalibrated=True)
        self._final = final
        to_log.update({k: final[k] for k in FINAL_LOGGED})
        if trainer.loggers:  # self.log is not available in on_train_end: write to the loggers directly
            metrics = _loggable(to_log)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def batch_stats_accuracy(self, net: nn.Module, split: str) -> float:
        """Accuracy of `net` on `split` in train mode (batch statistics at the training batch size)."""
        x, y = self.data.split(split)
        # A fresh copy per pass: train mode rewrites running buffers, and some norms read them in train mode.
        _, acc = evaluate(copy.deepcopy(net), self._train_mode_loader(x, y, shuffle=True), train_mode=True)
        return acc

    def summary(self) -> dict[str, Any]:
        """The final figures; every key is present (null when training diverged before any measurement)."""
        return {**dict.fromkeys(SUMMARY_KEYS), **self._final}


def _loggable(figures: dict[str, Any]) -> dict[str, float]:
    """The numeric, non-null figures that change between epochs (loggers take floats only)."""
    return {k: float(v) for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in RUN_CONSTANTS}


def calibration_callbacks(cfg: Any, data: InMemoryData, evaluator: Any, out_dir: Path) -> list[L.Callback]:
    """The run's calibration callback for config `cfg` (none when `calib.enabled=false`)."""
    c = cfg.calib
    if not c.enabled:
        return []
    from normbench.config import step_batch_size

    return [CalibrationMonitor(data, step_batch_size(cfg), samples=c.samples, every_n_epochs=c.every_n_epochs,
                               recalibrate=c.recalibrate, precise_test_every_epoch=c.precise_test_every_epoch,
                               eval_batch_size=cfg.data.eval_batch_size, seed=cfg.seed, augment=cfg.data.augment,
                               ece_bins=c.ece_bins, out_dir=out_dir, evaluator=evaluator)]
