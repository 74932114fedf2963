"""The population-statistics estimator and the calibration figures, against independent references."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from normbench.metrics import evaluate
from normbench.metrics.running_stats import (
    aggregate,
    calibrate,
    layer_errors,
    population_statistics,
    running_stat_layers,
)
from normbench.models import build_model
from normbench.norms import available, build_norm


def _batches(*xs):
    return [(x, torch.zeros(len(x), dtype=torch.long)) for x in xs]


def test_closed_form_weighting_by_element_count_without_bessel():
    # One channel, first layer: batch A holds 0 and 2 (2 samples), batch B four 4s. Over all six values
    # the mean is 18/6 = 3 and the biased variance 68/6 - 9 = 7/3. The mean of batch means would be 2.5,
    # and a Bessel-corrected variance 2.8: both are wrong answers here.
    bn = build_norm("bn", 1).double()
    a = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    b = torch.full((4, 1), 4.0, dtype=torch.float64)
    stats = population_statistics(nn.Sequential(bn), _batches(a, b), [("0", bn)])["0"]
    assert stats.count == 6
    torch.testing.assert_close(stats.mean, torch.tensor([3.0], dtype=torch.float64))
    torch.testing.assert_close(stats.var, torch.tensor([7.0 / 3.0], dtype=torch.float64))


def _np_bn_train(h, gamma, beta, eps, axes):
    mean = h.mean(axis=axes, keepdims=True)
    var = h.var(axis=axes, keepdims=True)  # biased: training-mode normalization
    return (h - mean) / np.sqrt(var + eps) * gamma + beta


def test_tiny_network_against_numpy_with_unequal_batches():
    """1x1 conv -> BN2d -> ReLU -> flatten -> linear -> BN1d, batches of 3, 5 and 2 samples.

    NumPy recomputes every layer input per batch (upstream BN normalizing with that batch's statistics,
    as in train mode), concatenates them and takes the plain mean/variance over all elements.
    """
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 1).double()
    bn1 = build_norm("bn", 3).double()
    fc = nn.Linear(3 * 2 * 2, 4).double()
    bn2 = build_norm("bn", 4).double()
    with torch.no_grad():
        for bn in (bn1, bn2):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    net = nn.Sequential(conv, bn1, nn.ReLU(), nn.Flatten(), fc, bn2)
    xs = [torch.randn(n, 2, 2, 2, dtype=torch.float64) * 3 + 1 for n in (3, 5, 2)]
    pop = population_statistics(net, _batches(*xs), [("bn1", bn1), ("bn2", bn2)])

    w_c, b_c = conv.weight.detach().numpy()[:, :, 0, 0], conv.bias.detach().numpy()
    g1, be1 = bn1.weight.detach().numpy(), bn1.bias.detach().numpy()
    w_f, b_f = fc.weight.detach().numpy(), fc.bias.detach().numpy()
    in1, in2 = [], []
    for x in xs:
        h = np.einsum("oc,nchw->nohw", w_c, x.numpy()) + b_c[None, :, None, None]
        in1.append(h)
        a = np.maximum(_np_bn_train(h, g1[None, :, None, None], be1[None, :, None, None], bn1.eps, (0, 2, 3)), 0)
        in2.append(a.reshape(len(x), -1) @ w_f.T + b_f)
    h1 = np.concatenate(in1)
    h2 = np.concatenate(in2)
    np.testing.assert_allclose(pop["bn1"].mean.numpy(), h1.mean(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pop["bn1"].var.numpy(), h1.var(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pop["bn2"].mean.numpy(), h2.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pop["bn2"].var.numpy(), h2.var(axis=0), rtol=1e-12, atol=1e-12)
    assert pop["bn1"].count == 10 * 4 and pop["bn2"].count == 10


def test_many_batches_fold_into_the_totals():
    from normbench.metrics.running_stats import FOLD_EVERY

    rng = np.random.default_rng(1)
    xs = [rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 2), size=(int(n), 3, 2, 2))
          for n in rng.integers(1, 6, size=2 * FOLD_EVERY + 5)]
    bn = build_norm("bn", 3).double()
    stats = population_statistics(nn.Sequential(bn), _batches(*[torch.from_numpy(x) for x in xs]))["0"]
    allx = np.concatenate(xs)
    np.testing.assert_allclose(stats.mean.numpy(), allx.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), allx.var(axis=(0, 2, 3)), rtol=1e-12)
    assert stats.count == allx.shape[0] * 4


def test_float32_inputs_with_mean_far_above_std():
    # E[x^2] - E[x]^2 would cancel catastrophically here; the shifted sums keep the variance accurate.
    torch.manual_seed(0)
    bn = build_norm("bn", 2)
    xs = [torch.randn(n, 2, 3, 3) * 0.01 + torch.tensor([1000.0, -50.0]).view(1, 2, 1, 1) for n in (8, 3, 5)]
    stats = population_statistics(nn.Sequential(bn), _batches(*xs))["0"]
    ref = torch.cat(xs).double()
    torch.testing.assert_close(stats.mean, ref.mean((0, 2, 3)), rtol=1e-9, atol=0)
    torch.testing.assert_close(stats.var, ref.var((0, 2, 3), unbiased=False), rtol=1e-4, atol=0)


def test_layer_errors_against_closed_form_and_torch_kl():
    mu_ema, var_ema = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 1.0])
    mu_pop, var_pop = torch.tensor([1.5, -1.0, 0.5]), torch.tensor([1.0, 1.0, 4.0])
    e = layer_errors(mu_ema, var_ema, mu_pop, var_pop)
    assert e["mean_rel_err"] == pytest.approx(math.sqrt(0.25 + 1.0) / math.sqrt(2.25 + 1.0 + 0.25))
    assert e["var_log_ratio"] == pytest.approx((math.log(2) + math.log(2) + math.log(4)) / 3)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu_pop.double(), var_pop.double().sqrt()),
                                           torch.distributions.Normal(mu_ema.double(), var_ema.double().sqrt()))
    assert e["kl"] == pytest.approx(float(kl.mean()))
    perfect = layer_errors(mu_pop, var_pop, mu_pop, var_pop)
    assert perfect == {"mean_rel_err": 0.0, "var_log_ratio": 0.0, "kl": 0.0}


def test_layer_without_running_mean_compares_variances_only():
    mu_pop, var_pop, var_ema = torch.tensor([3.0, -1.0]), torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.5])
    e = layer_errors(None, var_ema, mu_pop, var_pop)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu_pop.double(), var_pop.double().sqrt()),
                                           torch.distributions.Normal(mu_pop.double(), var_ema.double().sqrt()))
    assert e["mean_rel_err"] is None and e["kl"] == pytest.approx(float(kl.mean()))
    assert aggregate([{"layer": "a", "channels": 2, **e}])["calib_mean_rel_err"] is None


def test_eps_is_added_to_both_variances():
    e = layer_errors(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.ones(1) * 3.0, eps=1.0)
    assert e["var_log_ratio"] == pytest.approx(math.log(4.0))


def _lenet_with_stats(norm="bn", **opts):
    torch.manual_seed(0)
    net = build_model("lenet", norm, 10, 1, 28, norm_options=opts)
    net.train()
    with torch.no_grad():  # a few training-mode batches move the running statistics off 0/1
        for _ in range(3):
            net(torch.rand(16, 1, 28, 28))
    return net


def test_calibrate_leaves_the_model_untouched_and_recalibrated_copy_has_zero_error():
    net = _lenet_with_stats()
    net.eval()
    before = copy.deepcopy(net.state_dict())
    batches = _batches(*[torch.rand(n, 1, 28, 28) for n in (16, 16, 9)])
    cal = calibrate(net, batches)
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [r["layer"] for r in cal.layers] == net.norm_sites
    assert [r["channels"] for r in cal.layers] == [6, 16, 120, 84]
    assert cal.samples == 41 and cal.aggregate["calib_layers"] == 4
    assert all(r["kl"] > 0 for r in cal.layers)
    # The copy holds the population statistics: measured against the same batches, its error is zero.
    again = calibrate(cal.model, batches)
    for row in again.layers:
        assert row["mean_rel_err"] < 1e-6 and row["var_log_ratio"] < 1e-6 and abs(row["kl"]) < 1e-9


def test_aggregate_is_mean_and_worst_layer():
    rows = [{"layer": "a", "channels": 1, "mean_rel_err": 0.1, "var_log_ratio": 0.5, "kl": 0.2},
            {"layer": "b", "channels": 1, "mean_rel_err": 0.3, "var_log_ratio": 0.1, "kl": 0.4},
            {"layer": "c", "channels": 1, "mean_rel_err": None, "var_log_ratio": None, "kl": None}]
    agg = aggregate(rows)
    assert agg["calib_mean_rel_err"] == pytest.approx(0.2) and agg["calib_mean_rel_err_worst"] == 0.3
    assert agg["calib_var_log_ratio"] == pytest.approx(0.3) and agg["calib_var_log_ratio_worst"] == 0.5
    assert agg["calib_kl"] == pytest.approx(0.3) and agg["calib_kl_worst"] == 0.4
    assert agg["calib_worst_layer"] == "b" and agg["calib_layers"] == 2


# The norms whose layers keep running statistics by default (declared here, independently of the code measured).
KEEP_RUNNING_STATS = {"bn", "bn_scratch", "sync_bn", "ghost_bn", "brn", "evonorm_b0"}


@pytest.mark.parametrize("norm", available())
def test_every_registered_norm(norm):
    """Layers with a running_var buffer are measured (finite figures, model untouched); others give no rows."""
    net = _lenet_with_stats(norm)
    before = copy.deepcopy(net.state_dict())
    cal = calibrate(net, _batches(*[torch.rand(n, 1, 28, 28) for n in (16, 7)]))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [r["layer"] for r in cal.layers] == [n for n, _ in running_stat_layers(net)]
    if norm in KEEP_RUNNING_STATS:
        assert len(cal.layers) == 4 and cal.aggregate["calib_layers"] == 4
        assert all(math.isfinite(r["kl"]) and math.isfinite(r["var_log_ratio"]) for r in cal.layers)
        assert cal.model is not None
    elif not cal.layers:
        assert cal.model is None and cal.aggregate["calib_kl"] is None


@pytest.mark.parametrize("norm, opts", [("gn", {}), ("ln", {}), ("in", {}), ("none", {}),
                                        ("bn", {"track_running_stats": False})])
def test_norms_without_running_stats_report_null(norm, opts):
    net = build_model("lenet", norm, 10, 1, 28, norm_options=opts)
    assert running_stat_layers(net) == []
    cal = calibrate(net, _batches(torch.rand(8, 1, 28, 28)))
    assert cal.layers == [] and cal.model is None
    assert {k: v for k, v in cal.aggregate.items() if k != "calib_layers"} == dict.fromkeys(
        ["calib_mean_rel_err", "calib_mean_rel_err_worst", "calib_var_log_ratio", "calib_var_log_ratio_worst",
         "calib_kl", "calib_kl_worst", "calib_worst_layer"])


def test_detection_is_by_buffers_not_class():
    class OddNorm(nn.Module):  # not a BatchNorm subclass, but keeps running statistics
        def __init__(self, c):
            super().__init__()
            self.register_buffer("running_mean", torch.zeros(c))
            self.register_buffer("running_var", torch.ones(c))

        def forward(self, x):
            return x

    net = nn.Sequential(nn.Linear(3, 4), OddNorm(4))
    x = torch.randn(6, 3)
    cal = calibrate(net, _batches(x))
    h = net[0](x).detach().double()
    assert [r["layer"] for r in cal.layers] == ["1"]
    torch.testing.assert_close(cal.model[1].running_mean.double(), h.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cal.model[1].running_var.double(), h.var(0, unbiased=False), rtol=1e-5, atol=1e-6)


def test_instance_norm_with_tracking_uses_per_instance_statistics():
    torch.manual_seed(0)
    m = build_norm("in", 3, track_running_stats=True).double()
    xs = [torch.randn(n, 3, 4, 5, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
          for n in (2, 5)]
    stats = population_statistics(nn.Sequential(m), _batches(*xs))["0"]
    allx = torch.cat(xs).numpy()
    np.testing.assert_allclose(stats.mean.numpy(), allx.mean(axis=(2, 3)).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), allx.var(axis=(2, 3)).mean(0), rtol=1e-12)


def test_instance_norm_on_vectors_reports_null_rows():
    net = build_model("lenet", "in", 10, 1, 28, norm_options={"track_running_stats": True})
    cal = calibrate(net, _batches(torch.rand(8, 1, 28, 28)))
    kls = {r["layer"]: r["kl"] for r in cal.layers}
    assert kls["features.norm1"] is not None and kls["features.norm2"] is not None
    assert kls["classifier.norm3"] is None and kls["classifier.norm4"] is None  # LayerNorm path, buffers unused
    assert cal.aggregate["calib_layers"] == 2


def test_no_batches_is_an_error():
    net = _lenet_with_stats()
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate(net, [])


def test_layer_that_gets_no_input_is_named():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = build_norm("bn", 2), build_norm("bn", 2)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match="layer 'unused' received no input"):
        calibrate(Skips(), _batches(torch.randn(4, 2)))


def test_ece_against_numpy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4))
    x, y = torch.randn(300, 5) * 2, torch.randint(0, 4, (300,))
    out = evaluate(net, [(x[:128], y[:128]), (x[128:], y[128:])], ece_bins=10).as_dict()
    p = net(x).softmax(1).detach().double().numpy()
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y.numpy()).astype(float)
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())
    assert out["ece"] == pytest.approx(ece, abs=1e-6)
    assert out["acc"] == pytest.approx(correct.mean())
