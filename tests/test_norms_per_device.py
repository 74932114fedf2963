"""trainer.emulate_devices: batch statistics per emulated device, running statistics averaged over them."""

from __future__ import annotations

import copy

import pytest
import torch

from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.files import read_json
from normbench.norms import build_norm
from normbench.norms.per_device import PerDeviceNorm
from normbench.run_facts import effective_batch_size, norm_batch_size
from normbench.train import train
from tests.helpers import assert_same_as_reference


def _randomize(*mods):
    c = mods[0].weight.shape[0]
    w, b = torch.rand(c, dtype=torch.float64) + 0.5, torch.randn(c, dtype=torch.float64)
    with torch.no_grad():
        for m in mods:
            m.weight.copy_(w)
            m.bias.copy_(b)


@pytest.mark.parametrize("shape", [(12, 3, 2, 5), (12, 4)])
@pytest.mark.parametrize("momentum", [0.2, None])
def test_bn_per_device_equals_ghost_bn(shape, momentum):
    torch.manual_seed(0)
    ours = PerDeviceNorm(build_norm("bn", shape[1], momentum=momentum), devices=3).double()
    ref = build_norm("ghost_bn", shape[1], ghost_batch_size=4, momentum=momentum).double()
    _randomize(ours.norm, ref)
    assert_same_as_reference(_Unwrapped(ours), ref, shape)


class _Unwrapped(torch.nn.Module):
    """Exposes the wrapped layer's parameters and buffers under their own names, for the reference check."""

    def __init__(self, wrapper: PerDeviceNorm):
        super().__init__()
        self.wrapper = wrapper

    def forward(self, x):
        return self.wrapper(x)

    def __getattr__(self, name):
        if name == "wrapper":
            return super().__getattr__(name)
        return getattr(self.wrapper.norm, name)


@pytest.mark.parametrize("norm", ["bn_scratch", "brn", "evonorm_b0"])
def test_generic_slicing_equals_each_device_on_its_own(norm):
    # W = 3 devices of 4 samples: each device normalizes its interleaved slice with a replica that starts
    # from the same buffers; afterwards the buffers are the replicas' average (an all-reduce).
    torch.manual_seed(1)
    x = torch.randn(12, 4, 3, 3, dtype=torch.float64) * 2 + 1
    layer = build_norm(norm, 4, momentum=0.3).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.rand_like(p) * 0.5)
    replicas = [copy.deepcopy(layer) for _ in range(3)]
    ours = PerDeviceNorm(layer, devices=3)
    xo = x.clone().requires_grad_()
    y = ours(xo)
    g = torch.randn_like(y)
    y.backward(g)
    for j, rep in enumerate(replicas):
        xr = x[j::3].clone().requires_grad_()
        yr = rep(xr)
        torch.testing.assert_close(y[j::3], yr, msg=f"output of device {j}")
        yr.backward(g[j::3])
        torch.testing.assert_close(xo.grad[j::3], xr.grad, msg=f"input gradient of device {j}")
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, sum(dict(r.named_parameters())[name].grad for r in replicas))
    for name, b in layer.named_buffers():
        parts = [dict(r.named_buffers())[name] for r in replicas]
        expected = torch.stack(parts).mean(0) if b.is_floating_point() else parts[0]
        torch.testing.assert_close(b, expected, msg=name)


def test_eval_mode_and_tiny_batches_use_the_whole_batch():
    torch.manual_seed(2)
    ours = PerDeviceNorm(build_norm("bn_scratch", 3), devices=4).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    assert ours.slices(5) == 2 and ours.slices(3) == 1 and ours.slices(64) == 4
    # a short batch of a run with 4 samples per device: as many slices of 4 as it holds
    sized = PerDeviceNorm(build_norm("bn", 3), devices=8, per_device_batch=4)
    assert [sized.slices(n) for n in (32, 12, 7, 3)] == [8, 3, 1, 1]
    ref = build_norm("bn_scratch", 3).double()
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


def test_emulated_bn_run_equals_ghost_bn_run(tiny_cfg, tmp_path):
    common = ["data.drop_last=true", "calib.samples=128"]
    a = train(tiny_cfg(*common, "trainer.emulate_devices=4", "data.batch_size=8", f"out_dir={tmp_path}/a")).summary
    b = train(tiny_cfg(*common, "norm=ghost_bn", "norm.ghost_batch_size=8", "data.batch_size=32",
                       f"out_dir={tmp_path}/b")).summary
    for key in ("test_acc", "train_acc", "train_loss", "test_acc_precise", "calib_kl", "ema_horizon_samples"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    assert (a["batch_size"], a["emulate_devices"], a["norm_batch_size"], a["effective_batch_size"]) == (8, 4, 8, 32)
    assert a["optimizer_steps"] == b["optimizer_steps"]
    assert read_json(tmp_path / "a" / "summary.json")["config"]["trainer"]["emulate_devices"] == 4


def test_batch_free_and_synced_norms_see_the_whole_batch(tiny_cfg, tmp_path):
    gn_emulated = train(tiny_cfg("norm=gn", "trainer.emulate_devices=4", "data.batch_size=8",
                                 f"out_dir={tmp_path}/a")).summary
    gn_plain = train(tiny_cfg("norm=gn", "data.batch_size=32", f"out_dir={tmp_path}/b")).summary
    assert gn_emulated["test_acc"] == gn_plain["test_acc"] and gn_emulated["train_loss"] == gn_plain["train_loss"]
    cfg = load_config(["norm=sync_bn", "trainer.emulate_devices=4", "data.batch_size=8"])
    assert norm_batch_size(cfg) == 32 and effective_batch_size(cfg) == 32
    cfg = load_config(["trainer.emulate_devices=4", "data.batch_size=8", "trainer.accumulate_grad_batches=2"])
    assert norm_batch_size(cfg) == 8 and effective_batch_size(cfg) == 64


@pytest.mark.parametrize("overrides, message", [
    (["trainer.emulate_devices=0"], r"trainer.emulate_devices must be >= 1, got 0"),
    (["trainer.emulate_devices=2", "norm.accumulation_aware=true"],
     r"norm.accumulation_aware=true cannot be combined with trainer.emulate_devices > 1"),
])
def test_bad_emulation_settings_fail_before_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)


def test_lr_scaling_counts_emulated_devices(tmp_path, monkeypatch):
    from normbench.sweep.plan import TrialComposer
    from normbench.sweep.spec import parse_spec

    spec = parse_spec("s", {"base": {"data": "synthetic", "trainer.emulate_devices": 8},
                            "grid": {"data.batch_size": [2, 32]}, "lr_scaling": {"base_batch_size": 256}})
    composer = TrialComposer(spec, [])
    lrs = [composer.compose({"data.batch_size": b, "seed": 0})[0].optim.lr for b in (2, 32)]
    assert lrs == [pytest.approx(16 / 256), pytest.approx(1.0)]


def test_emulated_norm_layers_keep_the_model_init():
    from normbench.models import build_model
    from normbench.norms import norm_factory
    from normbench.norms.per_device import per_device

    net = build_model("resnet20", per_device(norm_factory("bn"), 4), 10, 3, 32, zero_init_residual=True)
    zeroed = [m for m in net.modules() if isinstance(m, PerDeviceNorm) and m.weight is not None
              and torch.all(m.weight == 0)]
    assert zeroed, "zero_init_residual should zero each block's last norm scale through the wrapper"
