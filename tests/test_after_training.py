"""After training: every evaluation pass works for every norm with any split size, and a failing measurement
never loses the trained run (its figures are null and the record says which failed and why)."""

from __future__ import annotations

import json

import lightning as L
import pytest

from normbench.config import load_config
from normbench.data.memory import BatchLoader
from normbench.norms import NORMS
from normbench.train import train
from normbench.training.history import RecordPart
from normbench.training.measurements import MEASUREMENTS, SUMMARY_KEYS, CalibrationMonitor
from tests.helpers import TINY

# 89 training samples at batch 32: two full batches and a trailing one of 25, which no ghost batch size of 2
# or more divides; 77 test samples leave 13. Ghost BN runs with ghost batches of 8 (25 = 3 x 8 + 1).
AWKWARD = ["data.num_train=89", "data.num_test=77", "data.batch_size=32", "data.eval_batch_size=64"]
PER_NORM = {"ghost_bn": ["norm.ghost_batch_size=8"]}


@pytest.mark.parametrize("norm", NORMS.names())
def test_every_norm_writes_a_complete_record_with_a_trailing_partial_batch(norm, tmp_path):
    cfg = load_config([*TINY, *AWKWARD, f"norm={norm}", *PER_NORM.get(norm, []), f"out_dir={tmp_path}"])
    train(cfg)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "ok" and s["measurement_errors"] == {}
    assert s["measurements"] == {m: "ok" for m in MEASUREMENTS if m != "recalibrate"}
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["test_acc"] is not None and s["test_ece"] is not None
    # batch-statistics accuracies: measured over all samples but at most the one a batch-statistics norm
    # cannot normalize alone; the record counts what was left out
    for split in ("train", "test"):
        assert isinstance(s[f"{split}_acc_batch"], float) and s[f"{split}_acc_batch_left_out"] in (0, 1)
    if norm == "ghost_bn":  # 25 = 24 + 1: one sample left out of the train-mode passes over the training set
        assert (s["train_acc_batch_left_out"], s["test_acc_batch_left_out"]) == (1, 0)  # 13 = 8 + 5
        assert (s["calib_samples"], s["calib_left_out"]) == (88, 1)
    if s["calib_samples"]:  # a norm with running statistics: the population pass saw every sample but those
        assert s["calib_samples"] + s["calib_left_out"] == 89


def test_trailing_batch_split_for_ghost_batches():
    import torch

    x, y = torch.zeros(89, 1, 2, 2), torch.arange(89)
    sizes = [len(b) for b, _ in BatchLoader(x, y, 32, shuffle=False, drop_last=False, min_batch=2, tail_multiple=8)]
    assert sizes == [32, 32, 24]  # the trailing 25: 24 in ghost batches of 8, the last sample cannot be normalized
    loader = BatchLoader(x, y, 32, shuffle=False, drop_last=False, min_batch=2, tail_multiple=8)
    assert loader.left_out == 1 and len(loader) == 3
    x, y = torch.zeros(90, 1, 2, 2), torch.arange(90)
    loader = BatchLoader(x, y, 32, shuffle=False, drop_last=False, min_batch=2, tail_multiple=8)
    assert [b.tolist() for _, b in loader][-2:] == [list(range(64, 88)), [88, 89]] and loader.left_out == 0
    loader = BatchLoader(x, y, 32, shuffle=False, drop_last=True)  # unchanged: drop_last drops the tail
    assert [len(b) for _, b in loader] == [32, 32] and loader.left_out == 26
    loader = BatchLoader(x, y, 32, shuffle=False, drop_last=False)  # and without a multiple: one tail batch
    assert [len(b) for _, b in loader] == [32, 32, 26] and loader.left_out == 0


def test_issue_command_ghost_bn_on_fashion_mnist_subset(tmp_path):
    """The issue's reproduction (600 training samples, batch 256, ghost batches of 32), on synthetic data."""
    cfg = load_config([*TINY, "data.num_train=600", "data.num_test=512", "norm=ghost_bn", "norm.ghost_batch_size=32",
                       "data.batch_size=256", "data.drop_last=true", "calib.samples=512", f"out_dir={tmp_path}"])
    s = train(cfg).summary
    assert (tmp_path / "summary.json").is_file() and s["measurement_errors"] == {}
    # 600 = 2 x 256 + 88 = ... + 64 + 24: every sample in a batch the ghost norm accepts
    assert s["train_acc_batch_left_out"] == 0 and isinstance(s["train_acc_batch"], float)


class ExplodesAtTrainEnd(L.Callback):
    """A user callback that fails after training (e.g. a logger or an extra measurement)."""

    def on_train_end(self, trainer, pl_module):
        raise RuntimeError("disk full while writing the extra figure")


class ExplodingSummary(RecordPart):
    def summary(self):
        raise KeyError("figure")


def test_failed_measurements_keep_the_trained_run(tiny_cfg, monkeypatch):
    def broken(self, net, split):
        if split == "train":
            raise ValueError("the pass broke")
        return original(self, net, split)

    original = CalibrationMonitor.batch_stats_accuracy
    monkeypatch.setattr(CalibrationMonitor, "batch_stats_accuracy", broken)
    result = train(tiny_cfg("trainer.max_epochs=2"), callbacks=[ExplodesAtTrainEnd(), ExplodingSummary()])
    s = json.loads((result.out_dir / "summary.json").read_text())
    assert s["status"] == "ok" and s["epochs"] == 2 and s["test_acc"] is not None
    assert [h["epoch"] for h in s["history"]] == [1, 2]
    assert s["train_acc_batch"] is None and s["train_acc_batch_left_out"] is None
    assert isinstance(s["test_acc_batch"], float) and s["test_acc_precise"] is not None  # the others ran
    assert s["measurements"]["train_acc_batch"] == "failed" and s["measurements"]["test_acc_batch"] == "ok"
    assert s["measurement_errors"] == {
        "train_acc_batch": "ValueError: the pass broke",
        "on_train_end": "RuntimeError: disk full while writing the extra figure",
        "ExplodingSummary.summary": "KeyError: 'figure'",
    }


def test_a_failure_during_training_still_fails_the_run(tiny_cfg):
    class ExplodesMidTraining(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(tiny_cfg(), callbacks=[ExplodesMidTraining()])


def test_cumulative_average_horizon_counts_the_samples_seen(tiny_cfg):
    """norm.momentum=null: the horizon is the samples the running average saw, a partial batch by its size."""
    s = train(tiny_cfg("data.num_train=100", "data.batch_size=32", "data.drop_last=false",
                       "norm.momentum=null")).summary
    assert s["train_examples_seen"] == 100
    assert s["ema_horizon_samples"] == 100  # 3 x 32 + 4, not 4 full batches of 32
