"""Test-time normalization modes (normbench.metrics.test_modes, CalibrationMonitor): closed-form cases."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from normbench.config import load_config
from normbench.data import load_data
from normbench.errors import ConfigError
from normbench.metrics import evaluate
from normbench.metrics.test_modes import mix_moments, weighted_evaluate
from normbench.models import build_model
from normbench.train import train
from normbench.training.measurements import CalibrationMonitor
from tests.helpers import TINY


def _trained_like(norm: str = "bn", seed: int = 0) -> nn.Module:
    """A LeNet whose running statistics are far from the population ones (a few train-mode batches)."""
    torch.manual_seed(seed)
    net = build_model("lenet", norm)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def _same_train_and_test():
    data = load_data("synthetic", num_train=192, num_test=64)
    data.test_x, data.test_y = data.train_x, data.train_y
    return data


def test_adabn_on_a_test_set_equal_to_the_training_set_is_precise_bn():
    data = _same_train_and_test()
    net = _trained_like()
    monitor = CalibrationMonitor(data, 32, samples=10_000)
    cal = monitor.measure(net)
    precise = monitor.precise_test(cal, None)
    adabn = monitor.adabn_test(net)
    assert adabn["test_acc_adabn"] == precise["test_acc_precise"]
    assert adabn["test_ece_adabn"] == pytest.approx(precise["test_ece_precise"], abs=1e-6)
    # and it is not the EMA model: the closed form is not met by accident
    ema = evaluate(net, data.loader("test", 64), ece_bins=15)
    assert ema.loss != pytest.approx(precise["test_loss_precise"], rel=1e-3)


def test_example_weighing_with_alpha_zero_is_precise_bn_and_alpha_changes_it():
    data = load_data("synthetic", num_train=192, num_test=64)
    net = _trained_like()
    monitor = CalibrationMonitor(data, 32, samples=10_000)
    cal = monitor.measure(net)
    precise = evaluate(cal.model, data.loader("test", 64), ece_bins=15)
    at_zero = weighted_evaluate(cal.model, data.loader("test", 64), 0.0)
    assert at_zero.acc == precise.acc
    assert at_zero.loss == pytest.approx(precise.loss, rel=1e-5)
    at_half = weighted_evaluate(cal.model, data.loader("test", 64), 0.5)
    assert at_half.loss != pytest.approx(precise.loss, rel=1e-3)
    # the population-statistics model itself is left untouched
    again = evaluate(cal.model, data.loader("test", 64), ece_bins=15)
    assert again == precise


def test_mixed_moments_are_those_of_the_mixture_distribution():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + 3.0
    b = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * 0.7 - 1.0
    alpha = 0.25  # 50,000 of a with 150,000 of b: the pooled sample's moments are the mixture's exactly
    a, b = a[:50_000], b[:150_000]
    pooled = torch.cat([a, b])
    mean, var = mix_moments(a.mean(0), a.var(0, unbiased=False), b.mean(0), b.var(0, unbiased=False), alpha)
    torch.testing.assert_close(mean, pooled.mean(0), atol=1e-9, rtol=0)
    torch.testing.assert_close(var, pooled.var(0, unbiased=False), atol=1e-9, rtol=0)
    _, var_only = mix_moments(a.mean(0), a.var(0), None, b.var(0), alpha)  # a layer that does not centre
    torch.testing.assert_close(var_only, alpha * a.var(0) + (1 - alpha) * b.var(0))


def test_example_weighing_normalizes_one_example_as_the_formula_says():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, affine=False).eval()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([1.5, 0.25, 4.0]))
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    alpha = 0.3
    out = []
    weighted_evaluate_layer = nn.Sequential(bn, nn.Flatten())
    logits = []

    def capture(module, args, output):
        logits.append(output)

    # evaluate through the public entry point: the flattened output is the "logits"; both methods
    h = weighted_evaluate_layer.register_forward_hook(capture)
    batch = [(x, torch.zeros(4, dtype=torch.long))]
    assert weighted_evaluate(weighted_evaluate_layer, batch, alpha, check=0).method == "per_example"
    per_example = torch.cat(logits)  # (4, 75), one example per call
    logits.clear()
    assert weighted_evaluate(weighted_evaluate_layer, batch, alpha, check=2).method == "batched"
    batched = logits[-1]  # the probe's calls come first, then the whole batch at once
    h.remove()
    torch.testing.assert_close(batched, per_example, atol=1e-5, rtol=1e-5)
    got = per_example
    for i in range(4):
        m_x = x[i].mean((1, 2))
        v_x = x[i].var((1, 2), unbiased=False)
        mean = alpha * m_x + (1 - alpha) * bn.running_mean
        var = alpha * v_x + (1 - alpha) * bn.running_var + alpha * (1 - alpha) * (m_x - bn.running_mean) ** 2
        out.append(((x[i] - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps)).flatten())
    torch.testing.assert_close(got, torch.stack(out), atol=1e-5, rtol=1e-5)
    assert bn.running_mean.tolist() == [0.5, -1.0, 2.0]  # the model given is not modified


def test_every_mode_is_in_the_record_and_its_cost_is_stated(tmp_path):
    r = train(load_config([*TINY, f"out_dir={tmp_path / 'bn'}", "calib.weighted_alpha=0.0"]))
    s = json.loads((r.out_dir / "summary.json").read_text())
    for mode in ("ema", "precise", "batch", "adabn", "weighted"):
        assert isinstance(s[f"test_acc_{mode}"], float), mode
        assert isinstance(s[f"test_ece_{mode}"], float), mode
    assert s["test_acc_ema"] == s["test_acc"] and s["test_ece_ema"] == s["test_ece"]
    assert s["test_acc_weighted"] == s["test_acc_precise"]  # alpha = 0
    assert set(s["test_modes_s"]) == {"batch", "adabn", "weighted"}
    assert s["calib_s"] > 0 and s["weighted_alpha"] == 0.0
    assert all(s["measurements"][m] == "ok" for m in ("test_acc_adabn", "test_acc_weighted"))
    default = train(load_config([*TINY, f"out_dir={tmp_path / 'default'}"])).summary
    assert default["weighted_alpha"] == 1 / 32  # null: 1 / the samples of one norm call


@pytest.mark.parametrize("bad", ["calib.weighted_alpha=1.5", "calib.weighted_alpha=-0.1"])
def test_weighted_alpha_out_of_range_is_refused(bad):
    with pytest.raises(ConfigError, match=r"calib.weighted_alpha must be in \[0, 1\]"):
        load_config([*TINY, bad])


@pytest.mark.parametrize("norm", ["bn", "bn_scratch", "brn", "ghost_bn", "frozen_bn", "evonorm_b0"])
def test_batched_example_weighing_matches_one_example_at_a_time(norm):
    data = load_data("synthetic", num_train=128, num_test=96)
    net = _trained_like(norm)
    cal = CalibrationMonitor(data, 32, samples=10_000).measure(net)
    fast = weighted_evaluate(cal.model, data.loader("test", 48), 0.2)
    slow = weighted_evaluate(cal.model, data.loader("test", 48), 0.2, check=0)
    assert (fast.method, slow.method) == ("batched", "per_example")
    assert fast.acc == slow.acc
    assert fast.loss == pytest.approx(slow.loss, rel=1e-4)


def test_a_layer_with_other_eval_arithmetic_falls_back_to_one_example_at_a_time():
    class Odd(nn.BatchNorm2d):
        def forward(self, x):  # eval mode: divides by the running variance without a square root
            return (x - self.running_mean[None, :, None, None]) / (self.running_var[None, :, None, None] + 1.0)

    torch.manual_seed(0)
    net = nn.Sequential(Odd(3), nn.Flatten()).eval()
    net[0].running_var.fill_(2.0)
    x = torch.randn(6, 3, 4, 4) * 3
    out = weighted_evaluate(net, [(x, torch.zeros(6, dtype=torch.long))], 0.5)
    assert out.method == "per_example"
