"""Checkpoints: every run writes <out_dir>/last.ckpt, and a run resumed from it ends with the record of an
uninterrupted run (same weights, batches, history, calibration, counters), on CPU exactly."""

from __future__ import annotations

import csv
import json
import math

import pytest

from normbench.cli import main
from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.train import train
from tests.helpers import TINY, CrashAtEpoch

# Two epochs, shuffled and augmented batches (the loader's random state matters), the measurements on.
RUN = [*TINY, "trainer.max_epochs=2", "trainer.threads=1", "data.augment=true", "logger=csv", "calib.samples=128"]
# What legitimately differs between two runs of the same config: time, place, and the resume itself.
VOLATILE = {"wall_s", "train_time_s", "examples_per_sec", "calib_s", "test_modes_s", "created_at", "out_dir",
            "config", "resumed_from", "resumed_from_step", "checkpoint", "git_dirty"}


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in VOLATILE}


def assert_same_record(ours: dict, ref: dict) -> None:
    a, b = comparable(ours), comparable(ref)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float) and math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert a[key] == b[key], key  # exactly: same CPU, same threads, same seed


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return train(load_config([*RUN, f"out_dir={out}"])).summary


def test_resume_after_a_crash_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_config([*RUN, f"out_dir={out}"]), callbacks=[CrashAtEpoch(2)])
    assert (out / "last.ckpt").is_file() and not (out / "summary.json").exists()
    resumed = train(load_config([*RUN, f"out_dir={out}", "trainer.ckpt_path=last"])).summary

    assert resumed["resumed_from"] == str(out / "last.ckpt")
    assert resumed["resumed_from_step"] == resumed["optimizer_steps"] // 2 > 0
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert_same_record(resumed, uninterrupted)
    assert resumed["calib_kl"] is not None and resumed["test_acc_precise"] is not None
    # calibration.json and metrics.csv continue in the run folder: one entry / one row per epoch
    calibration = json.loads((out / "calibration.json").read_text())
    assert [e["epoch"] for e in calibration["epochs"]] == [1, 2]
    with open(out / "metrics.csv", newline="") as f:
        epochs = [float(row["epoch"]) for row in csv.DictReader(f) if row.get("test_acc")]
    assert epochs == [1, 2]


def test_training_on_from_a_shorter_run_equals_the_longer_run(uninterrupted, tmp_path):
    """max_epochs=1, then the same run continued to max_epochs=2 (constant learning rate)."""
    out = tmp_path / "run"
    first = train(load_config([*RUN, f"out_dir={out}", "trainer.max_epochs=1"])).summary
    assert first["epochs"] == 1 and first["checkpoint"] == str(out / "last.ckpt")
    resumed = train(load_config([*RUN, f"out_dir={out}", f"trainer.ckpt_path={out / 'last.ckpt'}"])).summary
    assert_same_record(resumed, uninterrupted)


def test_no_checkpoint_when_off(tmp_path):
    summary = train(load_config([*TINY, f"out_dir={tmp_path}", "trainer.checkpoint=false"])).summary
    assert summary["checkpoint"] is None
    assert not list(tmp_path.glob("*.ckpt"))


def test_a_checkpoint_of_other_settings_is_refused(uninterrupted, tmp_path):
    ckpt = uninterrupted["checkpoint"]
    with pytest.raises(ConfigError, match=r"optim\.lr: 1\.0 -> 0\.5"):
        train(load_config([*RUN, f"out_dir={tmp_path}", f"trainer.ckpt_path={ckpt}", "optim.lr=0.5"]))
    assert not list(tmp_path.iterdir())  # refused before any work


def test_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    code = main(["run", *TINY, f"out_dir={tmp_path}/new", "trainer.ckpt_path=last"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "trainer.ckpt_path=last: no checkpoint file" in err[0]


def test_the_python_api_accepts_a_model_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    own = ModelCheckpoint(dirpath=str(tmp_path / "mine"), filename="e{epoch}", save_top_k=-1)
    train(load_config([*TINY, f"out_dir={tmp_path / 'run'}", "trainer.checkpoint=false"]), callbacks=[own])
    # (the name's epoch is the record's 1-based one, which the evaluator logs as `epoch`)
    assert [p.name for p in (tmp_path / "mine").glob("*.ckpt")] == ["eepoch=1.ckpt"]
    assert not list((tmp_path / "run").glob("*.ckpt"))


def test_a_finished_checkpoint_is_refused(uninterrupted, tmp_path):
    with pytest.raises(ConfigError, match="already the end of this run; raise trainer.max_epochs"):
        train(load_config([*RUN, f"out_dir={tmp_path}", f"trainer.ckpt_path={uninterrupted['checkpoint']}"]))
