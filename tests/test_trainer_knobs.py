"""Lightning's run-length and run-mode knobs act on normbench's own batching, and the record says what ran."""

from __future__ import annotations

import csv
import sys

import lightning as L
import pytest
import torch

from normbench.cli import main
from normbench.config import load_config
from normbench.train import train
from tests.helpers import TINY

BATCH = 32  # data=synthetic's batch size
N_TRAIN = 256  # TINY's data.num_train: 8 batches per epoch


def run(tmp_path, *overrides, callbacks=()):
    return train(load_config([*TINY, f"out_dir={tmp_path}", *overrides]), callbacks=list(callbacks)).summary


def test_limit_train_batches_counts_batches_steps_and_examples(tmp_path):
    s = run(tmp_path, "trainer.max_epochs=2", "trainer.limit_train_batches=2")
    assert s["train_batches"] == 2 and s["optimizer_steps"] == 4
    assert s["train_examples_seen"] == 4 * BATCH
    assert s["train_left_out"] == N_TRAIN - 2 * BATCH
    assert s["config"]["trainer"]["limit_train_batches"] == 2


def test_limit_train_batches_as_a_fraction(tmp_path):
    s = run(tmp_path, "trainer.limit_train_batches=0.5")
    assert s["train_batches"] == 4 and s["optimizer_steps"] == 4 and s["train_examples_seen"] == 4 * BATCH


def test_max_steps_stops_inside_an_epoch(tmp_path):
    s = run(tmp_path, "trainer.max_epochs=3", "trainer.max_steps=3")
    assert s["optimizer_steps"] == 3 and s["max_steps"] == 3
    assert s["train_examples_seen"] == 3 * BATCH
    assert [h["epoch"] for h in s["history"]] == [1]  # the partial epoch is evaluated


def test_fast_dev_run_one_batch_no_measurements_no_files(tmp_path):
    s = run(tmp_path, "trainer.max_epochs=3", "trainer.fast_dev_run=true", "logger=csv")
    assert s["fast_dev_run"] is True and s["train_batches"] == 1
    assert s["optimizer_steps"] == 1 and s["train_examples_seen"] == BATCH and s["epochs"] == 1
    assert "calib_kl" not in s and "test_acc_precise" not in s  # skipped, as with calib.enabled=false
    assert s["test_acc"] is not None and s["checkpoint"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no metrics.csv, no last.ckpt


def test_profiler_writes_its_report_to_the_run_folder(tmp_path, capsys):
    run(tmp_path, "trainer.profiler=simple")
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "run_training_epoch" in report
    assert "run_training_epoch" not in capsys.readouterr().out


def test_devices_auto_is_one_on_cpu(tmp_path):
    cfg = load_config([*TINY, "trainer.devices=auto"])
    assert cfg.trainer.devices == 1


class Deterministic(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())


@pytest.mark.parametrize(("value", "seen"), [("true", (True, False)), ("warn", (True, True)),
                                             ("false", (False, False))])
def test_deterministic_reaches_torch(tmp_path, value, seen):
    probe = Deterministic()
    s = run(tmp_path, f"trainer.deterministic={value}", "trainer.limit_train_batches=1", "calib.enabled=false",
            callbacks=[probe])
    assert probe.seen == seen and s["deterministic"] == value
    torch.use_deterministic_algorithms(False)


def test_several_loggers_at_once(tmp_path):
    s = run(tmp_path, "logger=[csv,tensorboard]")
    assert s["config"]["logger"]["name"] == ["csv", "tensorboard"]
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [float(r["epoch"]) for r in csv.DictReader(f) if r.get("test_acc")] == [1]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_tensorboard_writes_event_files_with_the_epoch_metrics(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event

    run(tmp_path, "logger=tensorboard")
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    tags = set()
    import struct

    data = events.read_bytes()
    pos = 0
    while pos < len(data):  # TFRecord framing: length, its CRC, the record, its CRC
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = Event.FromString(data[pos + 12:pos + 12 + length])
        tags.update(v.tag for v in event.summary.value)
        pos += 12 + length + 4
    assert {"test_acc", "train_loss", "calib_kl"} <= tags


def test_tensorboard_missing_is_one_error_line(tmp_path, capsys, monkeypatch):
    for name in ("tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, name, None)  # import and find_spec both see it absent
    code = main(["run", *TINY, f"out_dir={tmp_path}/run", "logger=tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "logger=tensorboard needs the tensorboard or tensorboardX package" in err[0]
    assert "pip install 'normbench[tensorboard]'" in err[0]
    assert not (tmp_path / "run").exists()
