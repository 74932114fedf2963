"""The measurements after epochs: running-statistics calibration, the accuracy split, the ECE of the predictions.

Every `calib.every_n_epochs` epochs (and always after the last one) `CalibrationMonitor` compares each
running-statistics layer's EMA with population statistics of the current weights
(`normbench.metrics.running_stats`) and evaluates the test set with those population statistics
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
    test_acc_adabn      test set, population statistics re-estimated on the test set (AdaBN)
    test_acc_weighted   test set, inference example weighing with `weighted_alpha`
                        (normbench.metrics.test_modes; alpha null: 1 / the samples of one norm call);
                        `weighted_method`: batched (checked change of variables) or per_example
    test_ece            expected calibration error (torchmetrics, L1, `calib.ece_bins` bins) of the
                        predictions behind test_acc; test_ece_<mode> for every mode above
                        (ema, precise, batch, adabn, weighted)
    calib_s             seconds spent in the per-epoch measurements (population pass and any per-epoch
                        precise test pass), all epochs together
    test_modes_s        seconds of each once-per-run pass after training ({mode: seconds})
Norms without running statistics report null for the calibration figures and the ema, precise,
adabn and weighted modes, and precise_gain. `<out_dir>/calibration.json` holds the per-layer table per epoch.

Batches of the train-mode passes have the training batch size and a seeded random order (the population
pass: a fixed seeded subset of the training set, the same at every epoch). A trailing partial batch is
split where the norm needs it (ghost BN: the largest multiple of its ghost batch size, then the rest as one
smaller ghost batch) and a trailing batch of one sample is dropped (a batch-statistics norm cannot
normalize it); `calib_left_out`, `train_acc_batch_left_out` and `test_acc_batch_left_out` count the
samples a pass left out (0 almost always).

A measurement that fails after (or between) training epochs never takes the run down: its figures are
null, `measurements` maps each measurement to ok / failed, and `measurement_errors` gives the reason.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from torch import nn

from normbench import record
from normbench.data import InMemoryData
from normbench.data.memory import BatchLoader
from normbench.files import write_json_atomic
from normbench.metrics import evaluate
from normbench.metrics.running_stats import Calibration, calibrate
from normbench.metrics.test_modes import weighted_evaluate
from normbench.run_facts import norm_batch_size, step_batch_size
from normbench.training.history import RecordPart
from normbench.training.module import Classifier

CALIBRATION_FILE = "calibration.json"
# The record fields this callback writes, every one present (null when not measured); train_acc_ema only
# comes with calib.recalibrate, `measurements` separately.
SUMMARY_KEYS = tuple(n for n in record.names(writer="measurements") if n not in ("train_acc_ema", "measurements"))
# Aggregate fields that do not change between epochs: in calibration.json and the record, not the history or logs.
# (calib_s is the measurements' cost, not a figure of the run.)
RUN_CONSTANTS = tuple(n for n in record.names(writer="measurements", per_epoch=False)
                      if n.startswith("calib_") and n != "calib_s")
PRECISE_KEYS = ("test_acc_precise", "test_loss_precise", "test_ece_precise", "precise_gain")
# Measured once after training (the per-epoch figures are logged at each epoch end).
FINAL_LOGGED = ("test_acc_ema", "train_acc_batch", "test_acc_batch", "test_acc_adabn", "test_acc_weighted",
                "test_ece")
# The measurements, each guarded on its own (a failure nulls its figures and is recorded with its reason).
MEASUREMENTS = record.MEASUREMENTS


def failure_reason(e: BaseException) -> str:
    """`Type: message` on one line, for a record."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__


class CalibrationMonitor(RecordPart):
    """Measures running-statistics calibration per epoch and the accuracy split at the end of training.

    Args:
        data: the run's resident data.
        batch_size: the training (per-device micro-)batch size; train-mode passes use it.
        norm_batch_size: the samples each norm call normalizes together (ghost BN: its ghost batch size);
            a trailing partial batch of a train-mode pass is split into a multiple of it and the rest.
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
        weighted_alpha: the example's weight in the `weighted` test mode (None: 1 / norm_batch_size).
        out_dir: where calibration.json goes (None: not written).

    Per epoch it runs when the run's evaluator has published the epoch (`epoch_evaluated`), adds its figures
    to the epoch's history entry, and stops measuring once the history says the run diverged.
    """

    def __init__(self, data: InMemoryData, batch_size: int, *, norm_batch_size: int | None = None,
                 samples: int = 8192, every_n_epochs: int = 1,
                 recalibrate: bool = False, precise_test_every_epoch: bool = False, eval_batch_size: int = 1024,
                 seed: int = 0, augment: bool = False, ece_bins: int = 15, out_dir: Path | str | None = None,
                 weighted_alpha: float | None = None) -> None:
        self.data = data
        self.batch_size = batch_size
        self.norm_batch_size = norm_batch_size or batch_size
        self.samples = samples
        self.every_n_epochs = every_n_epochs
        self.recalibrate = recalibrate
        self.precise_test_every_epoch = precise_test_every_epoch
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.augment = augment
        self.ece_bins = ece_bins
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.weighted_alpha = 1.0 / self.norm_batch_size if weighted_alpha is None else float(weighted_alpha)
        self.calib_seconds = 0.0
        self.epochs: list[dict[str, Any]] = []  # calibration.json's entries
        self._final: dict[str, Any] = {}
        self._epoch = 0
        self.errors: dict[str, str] = {}  # measurement -> reason of its (first) failure
        # (global_step, calibration, its aggregate, precise-test figures or None) of the latest measurement
        self._last: tuple[int, Calibration, dict[str, Any], dict[str, Any] | None] | None = None

    # -- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run continues from: calibration.json's epochs, the seconds spent, the failures."""
        return {"epochs": self.epochs, "calib_seconds": self.calib_seconds, "epoch": self._epoch,
                "errors": dict(self.errors)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
        self.calib_seconds = float(state_dict["calib_seconds"])
        self._epoch = int(state_dict["epoch"])
        self.errors = dict(state_dict["errors"])

    # -- batches -------------------------------------------------------------------------------------

    def _train_mode_loader(self, x: torch.Tensor, y: torch.Tensor, shuffle: bool, augment: bool = False):
        # min_batch=2: a trailing one-sample batch cannot be normalized with batch statistics
        return BatchLoader(x, y, self.batch_size, shuffle=shuffle, drop_last=False, min_batch=2, seed=self.seed,
                           augment=augment, tail_multiple=self.norm_batch_size)

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

    def _guard(self, name: str, fn, *args: Any) -> Any:
        """fn(*args), or None when it raises: the failure is recorded, the run goes on."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - any failure of one measurement must not lose the run
            self.errors.setdefault(name, failure_reason(e))
            return None

    def precise_test(self, cal: Calibration, ema_test_acc: float | None) -> dict[str, Any]:
        """Test figures of the population-statistics model `cal.model` (all null without one)."""
        if cal.model is None:
            return dict.fromkeys(PRECISE_KEYS)
        precise = evaluate(cal.model, self._test_batches(), ece_bins=self.ece_bins)
        gain = precise.acc - ema_test_acc if ema_test_acc is not None else None
        return {"test_acc_precise": precise.acc, "test_loss_precise": precise.loss,
                "test_ece_precise": precise.ece, "precise_gain": gain}

    def _measure_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> dict[str, Any]:
        """Measures, records the epoch in calibration.json and its history record; returns the aggregate."""
        cal = self.measure(cast(Classifier, pl_module).net)
        left_out = None if cal.model is None else min(self.samples, len(self.data.train_x)) - cal.samples
        figures: dict[str, Any] = {**cal.aggregate, "calib_samples": cal.samples, "calib_left_out": left_out}
        self._last = (trainer.global_step, cal, figures, None)
        # (a run resumed from its final checkpoint measures its last epoch again: one entry per epoch)
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch]
        self.epochs.append({"epoch": epoch, "layers": cal.layers, "aggregate": figures})
        self._add_to_history(epoch, figures)
        if trainer.is_global_zero and self.out_dir is not None:
            write_json_atomic(self.out_dir / CALIBRATION_FILE, {"epochs": self.epochs})
        return figures

    def _add_precise(self, epoch: int, ema_test_acc: float | None) -> dict[str, Any]:
        assert self._last is not None  # called after _measure_epoch
        step, cal, figures, precise = self._last
        if precise is None:
            precise = self.precise_test(cal, ema_test_acc)
            self._last = (step, cal, figures, precise)
            self._add_to_history(epoch, precise)
        return precise

    def _entry(self, epoch: int) -> dict[str, Any]:
        """The history entry of `epoch` (the evaluator's eval-mode figures with the running statistics)."""
        entry = self.history.entry(epoch) if self.history is not None else None
        return entry or {}

    def _add_to_history(self, epoch: int, figures: dict[str, Any]) -> None:
        if self.history is not None:
            self.history.add(epoch, figures)

    def _diverged(self) -> bool:
        return self.history is not None and self.history.diverged

    # -- hooks ----------------------------------------------------------------------------------------

    def epoch_evaluated(self, trainer: L.Trainer, pl_module: L.LightningModule, entry: dict[str, Any]) -> None:
        self._epoch = int(entry["epoch"])
        if self._diverged() or self._epoch % self.every_n_epochs:
            return
        t0 = time.perf_counter()
        measured = self._guard("calibration", self._measure_epoch, trainer, pl_module, self._epoch)
        figures = dict(measured or {})
        if measured is not None and self.precise_test_every_epoch:
            figures.update(self._guard("test_acc_precise", self._add_precise, self._epoch, entry.get("test_acc")) or {})
        self.calib_seconds += time.perf_counter() - t0
        if measured is None:
            return
        pl_module.log_dict(_loggable(figures), on_epoch=True, prog_bar=False, logger=bool(trainer.loggers))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch == 0 or self._diverged():
            return
        net = cast(Classifier, pl_module).net
        ema = self._guard("test_ece", evaluate, net, self._test_batches(), False, self.ece_bins)
        ema_acc = ema.acc if ema is not None else self._entry(self._epoch).get("test_acc")
        to_log: dict[str, Any] = {}
        if self._last is None or self._last[0] != trainer.global_step:  # last epoch not on the schedule
            to_log.update(self._guard("calibration", self._measure_epoch, trainer, pl_module, self._epoch) or {})
        final: dict[str, Any] = {"test_ece": None if ema is None else ema.ece, "recalibrated": False}
        cal = None
        if self._last is not None and self._last[0] == trainer.global_step:  # calibrated with the final weights
            _, cal, figures, _ = self._last
            final.update(figures)
            precise = self._guard("test_acc_precise", self._add_precise, self._epoch, ema_acc)
            if precise is not None:
                to_log.update(precise)
                final.update(precise)
            if cal.model is not None:
                final["test_acc_ema"] = ema_acc
        final["test_ece_ema"] = final["test_ece"] if final.get("test_acc_ema") is not None else None
        final["weighted_alpha"] = self.weighted_alpha
        timings: dict[str, float] = {}  # the once-per-run test-mode passes (test_modes_s)
        final.update(self._batch_stats(net, "train"))
        with _timed(timings, "batch"):
            final.update(self._batch_stats(net, "test"))
        if cal is not None and cal.model is not None:
            with _timed(timings, "adabn"):
                final.update(self._guard("test_acc_adabn", self.adabn_test, net) or {})
            with _timed(timings, "weighted"):
                weighted = self._guard("test_acc_weighted", weighted_evaluate, cal.model, self._test_batches(),
                                       self.weighted_alpha, self.ece_bins)
            if weighted is not None:
                final.update({"test_acc_weighted": weighted.acc, "test_ece_weighted": weighted.ece,
                              "weighted_method": weighted.method})
        final["test_modes_s"] = timings
        if self.recalibrate and cal is not None and cal.model is not None and \
                final.get("test_acc_precise") is not None:
            final.update(self._guard("recalibrate", self._recalibrated, cal, final) or {})
        self._final = final
        to_log.update({k: final.get(k) for k in FINAL_LOGGED})
        if trainer.loggers:  # self.log is not available in on_train_end: write to the loggers directly
            metrics = _loggable(to_log)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _recalibrated(self, cal: Calibration, final: dict[str, Any]) -> dict[str, Any]:
        """The population-statistics model's figures as the run's headline train/test figures."""
        last = self._entry(self._epoch)
        assert cal.model is not None  # called only with a population-statistics model
        train = evaluate(cal.model, self.data.loader("train", self.eval_batch_size))
        train_loss, train_acc = train.loss, train.acc
        return {"test_acc": final["test_acc_precise"], "test_loss": final["test_loss_precise"],
                "test_ece": final["test_ece_precise"], "train_acc": train_acc, "train_loss": train_loss,
                "acc_gap": train_acc - final["test_acc_precise"], "train_acc_ema": last.get("train_acc"),
                "recalibrated": True}

    def _batch_stats(self, net: nn.Module, split: str) -> dict[str, Any]:
        """The record's batch-statistics figures of `split` (null when the pass failed)."""
        measured = self._guard(f"{split}_acc_batch", self.batch_stats_accuracy, net, split)
        acc, left_out, ece = measured if measured is not None else (None, None, None)
        out = {f"{split}_acc_batch": acc, f"{split}_acc_batch_left_out": left_out}
        return {**out, "test_ece_batch": ece} if split == "test" else out

    def batch_stats_accuracy(self, net: nn.Module, split: str) -> tuple[float, int, float | None]:
        """(accuracy, samples left out, ECE) of `net` on `split` in train mode (batch statistics, training batch)."""
        x, y = self.data.split(split)
        batches = self._train_mode_loader(x, y, shuffle=True)
        # A fresh copy per pass: train mode rewrites running buffers, and some norms read them in train mode.
        scores = evaluate(copy.deepcopy(net), batches, train_mode=True, ece_bins=self.ece_bins)
        return scores.acc, batches.left_out, scores.ece

    def adabn_test(self, net: nn.Module) -> dict[str, Any]:
        """Test figures with population statistics re-estimated on the test set (AdaBN): the population pass
        over the whole test set in train-mode batches of the training batch size. `net` has running statistics."""
        batches = self._train_mode_loader(self.data.test_x, self.data.test_y, shuffle=False)
        cal = calibrate(net, batches)
        assert cal.model is not None  # `net` has running statistics
        scores = evaluate(cal.model, self._test_batches(), ece_bins=self.ece_bins)
        return {"test_acc_adabn": scores.acc, "test_ece_adabn": scores.ece, "adabn_left_out": batches.left_out}

    def summary(self) -> dict[str, Any]:
        """The final figures; every key is present (null when training diverged before any measurement).

        `measurements` maps each measurement to ok or failed (empty when none ran) and `measurement_errors`
        gives each failure's reason.
        """
        ran = self._epoch > 0 and not self._diverged()
        status = {m: ("failed" if m in self.errors else "ok") for m in MEASUREMENTS if ran or m in self.errors}
        if not self.recalibrate:
            status.pop("recalibrate", None)
        return {**dict.fromkeys(SUMMARY_KEYS), **self._final, "calib_s": self.calib_seconds, "measurements": status,
                "measurement_errors": dict(self.errors)}


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Adds the seconds the block takes to `timings[name]`."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _loggable(figures: dict[str, Any]) -> dict[str, float]:
    """The numeric, non-null figures that change between epochs (loggers take floats only)."""
    return {k: float(v) for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in RUN_CONSTANTS}


def measurement_callbacks(cfg: Any, data: InMemoryData, out_dir: Path) -> list[RecordPart]:
    """The run's measurements callback for config `cfg` (none when `calib.enabled=false`)."""
    c = cfg.calib
    if not c.enabled:
        return []
    return [CalibrationMonitor(data, step_batch_size(cfg), norm_batch_size=norm_batch_size(cfg),
                               samples=c.samples, every_n_epochs=c.every_n_epochs,
                               recalibrate=c.recalibrate, precise_test_every_epoch=c.precise_test_every_epoch,
                               eval_batch_size=cfg.data.eval_batch_size, seed=cfg.seed, augment=cfg.data.augment,
                               ece_bins=c.ece_bins, out_dir=out_dir, weighted_alpha=c.weighted_alpha)]
