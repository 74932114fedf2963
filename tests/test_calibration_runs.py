"""Calibration measured in real training runs: records, momentum 0 vs default, null figures, options."""

import json

import pytest
import torch

from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.train import train
from normbench.training.measurements import CALIBRATION_FILE
from tests.helpers import TINY, requires_fmnist, run_cli

CALIB_FIGURES = ["calib_mean_rel_err", "calib_var_log_ratio", "calib_kl", "calib_mean_rel_err_worst",
                 "calib_var_log_ratio_worst", "calib_kl_worst"]
SPLIT = ["test_acc_ema", "test_acc_precise", "precise_gain", "train_acc_batch", "test_acc_batch", "test_ece"]


def _run(tmp_path_factory, name, *overrides):
    out = tmp_path_factory.mktemp(name)
    return train(load_config([*TINY, f"out_dir={out}", *overrides]))


# d2l recipe (LeNet-BN with sigmoids, SGD lr 1.0) scaled down: 1536 Fashion-MNIST images, batch 32, one
# epoch = 48 steps, so the default EMA (momentum 0.1) has forgotten its 0/1 start (0.9^48 < 1%).
D2L_SMALL = ["data=fashion_mnist", "data.train_subset=1536", "data.test_subset=512", "data.batch_size=32",
             "trainer.max_epochs=1", "trainer.progress_bar=false", "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def d2l_pair(tmp_path_factory):
    runs = {}
    for momentum in ("0.1", "0.0"):
        out = tmp_path_factory.mktemp(f"d2l_m{momentum}")
        runs[momentum] = train(load_config([*D2L_SMALL, f"norm.momentum={momentum}", f"out_dir={out}"])).summary
    return runs


@requires_fmnist
def test_default_momentum_has_small_calibration_error(d2l_pair):
    s = d2l_pair["0.1"]
    assert s["calib_mean_rel_err"] < 0.25 and s["calib_var_log_ratio"] < 0.25 and s["calib_kl"] < 0.05
    assert s["calib_kl_worst"] < 0.1
    assert abs(s["precise_gain"]) < 0.05


@requires_fmnist
def test_momentum_zero_has_large_error_and_precise_far_above_ema(d2l_pair):
    s, ref = d2l_pair["0.0"], d2l_pair["0.1"]
    # running_mean never leaves 0: ||0 - mu|| / ||mu|| = 1 in every layer
    assert s["calib_mean_rel_err"] == pytest.approx(1.0) and s["calib_mean_rel_err_worst"] == pytest.approx(1.0)
    assert s["calib_var_log_ratio"] > 1.0 and s["calib_kl"] > 0.3
    assert s["calib_kl"] > 10 * ref["calib_kl"]
    assert s["test_acc_precise"] > s["test_acc_ema"] + 0.3 and s["precise_gain"] > 0.3
    assert s["test_acc"] == s["test_acc_ema"]


@requires_fmnist
def test_running_stats_do_not_feed_back_into_training(d2l_pair):
    # Training normalizes with batch statistics, so both runs reach the same weights: every figure that
    # does not read the running statistics agrees exactly, while the EMA figures differ.
    a, b = d2l_pair["0.1"], d2l_pair["0.0"]
    for key in ("test_acc_precise", "test_loss_precise", "train_acc_batch", "test_acc_batch", "train_acc_running"):
        assert a[key] == b[key], key
    assert a["test_acc_ema"] != b["test_acc_ema"]


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    return _run(tmp_path_factory, "bn", "trainer.max_epochs=3", "calib.every_n_epochs=2", "logger=csv")


def test_summary_history_and_calibration_json(bn_run):
    s = json.loads((bn_run.out_dir / "summary.json").read_text())
    for key in [*CALIB_FIGURES, *SPLIT, "test_ece_precise", "calib_worst_layer"]:
        assert isinstance(s[key], (float, str)), key
    assert s["calib_samples"] == 256 and s["calib_layers"] == 4 and s["recalibrated"] is False
    assert s["test_acc_ema"] == s["test_acc"]
    assert s["precise_gain"] == pytest.approx(s["test_acc_precise"] - s["test_acc_ema"])
    assert 0.0 <= s["test_ece"] <= 1.0
    # every 2nd epoch, and always the last: epochs 2 and 3 of 3
    measured = [h["epoch"] for h in s["history"] if "calib_kl" in h]
    assert measured == [2, 3]
    # the precise-BN test pass runs once, after training (calib.precise_test_every_epoch=false)
    assert [h["epoch"] for h in s["history"] if "test_acc_precise" in h] == [3]
    assert s["history"][-1]["calib_kl"] == s["calib_kl"]
    assert s["history"][-1]["test_acc_precise"] == s["test_acc_precise"]

    doc = json.loads((bn_run.out_dir / CALIBRATION_FILE).read_text())
    assert list(doc) == ["epochs"] and [e["epoch"] for e in doc["epochs"]] == [2, 3]
    for entry in doc["epochs"]:
        assert set(entry) == {"epoch", "layers", "aggregate"} and isinstance(entry["epoch"], int)
        assert [r["layer"] for r in entry["layers"]] == bn_run.module.net.norm_sites
        for row in entry["layers"]:
            assert list(row) == ["layer", "channels", "mean_rel_err", "var_log_ratio", "kl"]
            assert isinstance(row["channels"], int) and all(isinstance(row[f], float) for f in list(row)[2:])
    last = doc["epochs"][-1]
    assert last["aggregate"]["calib_kl"] == s["calib_kl"]
    assert last["aggregate"]["calib_kl_worst"] == max(r["kl"] for r in last["layers"])


def test_aggregates_reach_the_logger(bn_run):
    import csv

    rows = list(csv.DictReader((bn_run.out_dir / "metrics.csv").open()))
    kl = [float(r["calib_kl"]) for r in rows if r.get("calib_kl")]
    assert len(kl) == 2 and kl[-1] == pytest.approx(bn_run.summary["calib_kl"], rel=1e-6)
    assert any(r.get("test_acc_batch") for r in rows) and any(r.get("precise_gain") for r in rows)


def test_calibration_leaves_training_unchanged(bn_run, tmp_path_factory):
    off = _run(tmp_path_factory, "off", "trainer.max_epochs=3", "calib.enabled=false")
    assert not (off.out_dir / CALIBRATION_FILE).exists()
    assert not any(k in off.summary for k in [*CALIB_FIGURES, *SPLIT])
    on_state, off_state = bn_run.module.net.state_dict(), off.module.net.state_dict()
    for key, value in off_state.items():
        assert torch.equal(on_state[key], value), key  # weights and running buffers, bit for bit
    assert [h["test_acc"] for h in off.summary["history"]] == [h["test_acc"] for h in bn_run.summary["history"]]


@pytest.mark.parametrize("norm", ["gn", "none"])
def test_norms_without_running_stats_report_null(tmp_path_factory, norm):
    r = _run(tmp_path_factory, norm, f"norm={norm}")
    s = json.loads((r.out_dir / "summary.json").read_text())
    for key in [*CALIB_FIGURES, "calib_worst_layer", "test_acc_ema", "test_acc_precise", "precise_gain",
                "test_acc_adabn", "test_acc_weighted", "test_ece_ema", "test_ece_adabn", "test_ece_weighted"]:
        assert key in s and s[key] is None, key
    assert s["calib_layers"] == 0
    assert isinstance(s["train_acc_batch"], float) and isinstance(s["test_ece"], float)
    assert s["test_acc_batch"] == s["test_acc"]  # batch-independent norm: same predictions in either mode
    doc = json.loads((r.out_dir / CALIBRATION_FILE).read_text())
    assert doc["epochs"][0]["layers"] == [] and doc["epochs"][0]["aggregate"]["calib_kl"] is None


def test_recalibrate_reports_population_statistics(tmp_path_factory):
    r = _run(tmp_path_factory, "recal", "calib.recalibrate=true", "norm.momentum=0.0", "trainer.max_epochs=2",
             "calib.precise_test_every_epoch=true")
    s = r.summary
    for h in s["history"]:
        assert h["precise_gain"] == pytest.approx(h["test_acc_precise"] - h["test_acc"])
    assert s["recalibrated"] is True
    assert s["test_acc"] == s["test_acc_precise"] and s["test_acc_ema"] == s["history"][-1]["test_acc"]
    assert s["test_acc"] > s["test_acc_ema"]  # momentum 0: the EMA is useless, the population is not
    assert s["train_acc_ema"] == s["history"][-1]["train_acc"] and s["train_acc"] != s["train_acc_ema"]
    assert s["acc_gap"] == pytest.approx(s["train_acc"] - s["test_acc"])
    assert torch.equal(r.module.net.features.norm1.running_mean, torch.zeros(6))  # the model itself is untouched


def test_calib_options_are_validated():
    cfg = load_config([])
    assert cfg.calib.enabled is True and cfg.calib.samples == 8192 and cfg.calib.every_n_epochs == 1
    assert cfg.calib.recalibrate is False and cfg.calib.precise_test_every_epoch is False
    with pytest.raises(ConfigError, match="calib.samples must be >= 2, got 1"):
        load_config(["calib.samples=1"])
    with pytest.raises(ConfigError, match="unknown key 'calib.bogus'; accepted: enabled, samples, every_n_epochs"):
        load_config(["calib.bogus=1"])


def test_cli_rejects_bad_calib_option_before_work():
    p = run_cli("run", "calib.every_n_epochs=0")
    assert p.returncode == 2 and p.stderr.strip() == "error: calib.every_n_epochs must be >= 1, got 0"


def test_diverged_run_keeps_every_key_as_null(tmp_path_factory):
    r = _run(tmp_path_factory, "div", "norm=bn", "model.act=relu", "optim.lr=1e6", "trainer.max_epochs=2")
    assert r.summary["status"] == "diverged"
    for key in [*CALIB_FIGURES, *SPLIT]:
        assert key in r.summary and r.summary[key] is None, key


@pytest.mark.slow
@requires_fmnist
def test_full_d2l_recipe_epoch_has_small_calibration_error(tmp_path):
    # The full recipe (60k images, batch 256, lr 1.0), one epoch: measured 0.053 / 0.073 / 0.014 / +0.007.
    s = train(load_config(["trainer.max_epochs=1", "trainer.progress_bar=false", "trainer.accelerator=cpu",
                           f"out_dir={tmp_path}"])).summary
    assert s["calib_mean_rel_err"] < 0.1 and s["calib_var_log_ratio"] < 0.15 and s["calib_kl"] < 0.03
    assert abs(s["precise_gain"]) < 0.02


def test_population_pass_subset_and_trailing_single_sample():
    from normbench.data import load_data
    from normbench.models import build_model
    from normbench.training.measurements import CalibrationMonitor

    data = load_data("synthetic", num_train=128, num_test=16)
    net = build_model("lenet", "bn")
    # 65 = 2 x 32 + 1: the one-sample remainder cannot be batch-normalized and is left out
    cal = CalibrationMonitor(data, 32, samples=65).measure(net)
    assert cal.samples == 64
    assert CalibrationMonitor(data, 32, samples=50).measure(net).samples == 50  # 32 + 18
    assert CalibrationMonitor(data, 32, samples=10_000).measure(net).samples == 128  # all there is
    # a fixed subset: the same figures every time
    assert CalibrationMonitor(data, 32, samples=65).measure(net).layers == cal.layers
