"""The result table printed after a run: the precise-statistics accuracy and the calibration beside test accuracy,
a title that an 80-column terminal shows phrase by phrase, and "1 epoch"."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from normbench.config import load_config
from normbench.report.console import print_summary
from normbench.train import train
from tests.helpers import TINY


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(load_config([*TINY, f"out_dir={out}", "calib.samples=128"]))
    return json.loads((out / "summary.json").read_text())


def printed(summary: dict, width: int = 80) -> list[str]:
    buffer = io.StringIO()
    print_summary(summary, Console(file=buffer, width=width, force_terminal=False, color_system=None))
    return buffer.getvalue().splitlines()


def test_precise_accuracy_and_calibration_beside_test_accuracy(summary):
    text = "\n".join(printed(summary))
    for label, key in (("test accuracy (eval mode)", "test_acc"),
                       ("test accuracy, precise statistics", "test_acc_precise"),
                       ("calibration: KL(population || EMA)", "calib_kl"),
                       ("calibration: mean rel. error", "calib_mean_rel_err")):
        (line,) = [line for line in text.splitlines() if label in line]
        assert f"{summary[key]:.4f}" in line


def test_title_says_1_epoch_and_keeps_its_phrases_whole(summary):
    lines = [line.strip() for line in printed(summary)]
    assert "lenet + bn on synthetic" in lines
    assert "batch 32, 1 epoch, seed 0" in lines
    long_names = {**summary, "model": "resnet18_imagenet", "norm": "evonorm_b0", "dataset": "fashion_mnist",
                  "epochs": 2}
    lines = [line.strip() for line in printed(long_names)]
    assert "resnet18_imagenet + evonorm_b0 on fashion_mnist" in lines
    assert "batch 32, 2 epochs, seed 0" in lines
    assert max(len(line) for line in printed(long_names)) <= 80


def test_a_norm_without_running_statistics_shows_na(summary):
    no_stats = {**summary, "test_acc_precise": None, "calib_kl": None}
    (line,) = [line for line in printed(no_stats) if "precise statistics" in line]
    assert "n/a" in line
