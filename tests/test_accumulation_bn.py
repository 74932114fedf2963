"""norm.accumulation_aware=true: one running-statistics update per optimizer step, from the pooled micro-batches."""

import numpy as np
import pytest
import torch

from normbench.norms import build_norm
from normbench.norms.accumulation import AccumulationAwareBatchNorm, MomentAccumulator
from normbench.train import train
from normbench.training.accumulation import AccumulationBoundary


def _pair(c, momentum, dtype=torch.float64):
    plain = build_norm("bn", c, momentum=momentum).to(dtype)
    aware = build_norm("bn", c, momentum=momentum, accumulation_aware=True).to(dtype)
    assert isinstance(aware, AccumulationAwareBatchNorm) and not isinstance(plain, AccumulationAwareBatchNorm)
    aware.load_state_dict(plain.state_dict())
    aware.defer_running_stats = True
    return plain, aware


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (4, 7)])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("k", [1, 3])
def test_k_micro_batches_equal_one_batch_of_k_times_b(shape, momentum, k):
    torch.manual_seed(0)
    b, c = shape[0], shape[1]
    plain, aware = _pair(c, momentum)
    for step in range(4):
        micro = [torch.randn(b, *shape[1:], dtype=torch.float64) * (step + 1) + step for _ in range(k)]
        for x in micro:
            aware(x)
        assert aware.pending_samples == k * b * (x.numel() // (b * c))
        aware.commit_running_stats()
        plain(torch.cat(micro))  # plain bn on the k*b samples as one batch
        torch.testing.assert_close(aware.running_mean, plain.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(aware.running_var, plain.running_var, rtol=1e-12, atol=1e-12)
        assert int(aware.num_batches_tracked) == int(plain.num_batches_tracked) == step + 1


def test_moment_accumulator_merges_exactly():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(5.0, 2.0, size=(n, 3)) for n in (1, 7, 2, 30)]
    acc = MomentAccumulator()
    for c in chunks:
        acc.add(len(c), torch.from_numpy(c.mean(0)), torch.from_numpy(c.var(0)))
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(acc.mean.numpy(), allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.var.numpy(), allx.var(0), rtol=1e-12)


def test_float32_equal_within_float_tolerance():
    torch.manual_seed(1)
    plain, aware = _pair(6, 0.1, torch.float32)
    micro = [torch.randn(8, 6, 4, 4) * 3 + 2 for _ in range(4)]
    for x in micro:
        aware(x)
    aware.commit_running_stats()
    plain(torch.cat(micro))
    torch.testing.assert_close(aware.running_mean, plain.running_mean)
    torch.testing.assert_close(aware.running_var, plain.running_var)


def test_outputs_and_gradients_are_plain_micro_batch_bn():
    torch.manual_seed(2)
    plain, aware = _pair(5, 0.1)
    with torch.no_grad():
        w = torch.rand(5, dtype=torch.float64) + 0.5
        for m in (plain, aware):
            m.weight.copy_(w)
    x = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    xp, xa = x.clone().requires_grad_(), x.clone().requires_grad_()
    yp, ya = plain(xp), aware(xa)
    torch.testing.assert_close(ya, yp)
    g = torch.randn_like(yp)
    yp.backward(g)
    ya.backward(g)
    torch.testing.assert_close(xa.grad, xp.grad)
    torch.testing.assert_close(aware.weight.grad, plain.weight.grad)
    aware.commit_running_stats()  # one micro-batch per step: the same update as plain bn
    plain.eval()
    aware.eval()
    torch.testing.assert_close(aware(x), plain(x))


def test_without_a_controller_it_is_plain_bn():
    torch.manual_seed(3)
    plain, aware = _pair(4, 0.1)
    aware.defer_running_stats = False
    for _ in range(3):
        x = torch.randn(5, 4, dtype=torch.float64)
        plain(x)
        aware(x)
    torch.testing.assert_close(aware.running_mean, plain.running_mean)
    assert int(aware.num_batches_tracked) == 3 and aware.pending_samples == 0
    aware.commit_running_stats()  # nothing pending: no update
    assert int(aware.num_batches_tracked) == 3


def test_state_dict_interchangeable_with_bn():
    plain, aware = _pair(4, 0.1)
    plain.load_state_dict(aware.state_dict())
    assert set(aware.state_dict()) == set(plain.state_dict())


def test_option_is_validated_and_only_for_bn():
    with pytest.raises(ValueError, match="norm 'gn' has no option 'accumulation_aware'"):
        build_norm("gn", 4, accumulation_aware=True)
    with pytest.raises(ValueError, match="option 'accumulation_aware' must be true or false"):
        build_norm("bn", 4, accumulation_aware="yes")


def _first_norm(result):
    return result.module.net.features.norm1


def test_lightning_run_commits_once_per_optimizer_step(tiny_cfg):
    # 256 samples / batch 32 = 8 micro-batches; k=3 -> steps after batches 3, 6 and 8 (the epoch's last).
    r = train(tiny_cfg("norm.accumulation_aware=true", "trainer.accumulate_grad_batches=3", "calib.enabled=false"))
    assert r.summary["optimizer_steps"] == 3
    for site in r.module.net.norm_sites:
        layer = r.module.net.get_submodule(site)
        assert int(layer.num_batches_tracked) == 3 and layer.pending_samples == 0
        assert layer.defer_running_stats is False  # handed back as plain bn after training
    plain = train(tiny_cfg("trainer.accumulate_grad_batches=3", "calib.enabled=false"))
    assert int(_first_norm(plain).num_batches_tracked) == 8
    # one update covers k micro-batches: the EMA horizon in samples is k times plain bn's
    assert r.summary["ema_horizon_samples"] == pytest.approx(3 * 32 / 0.1)
    assert plain.summary["ema_horizon_samples"] == pytest.approx(32 / 0.1)


def test_lightning_run_equals_plain_bn_at_k_times_b_with_fixed_weights(tiny_cfg, tmp_path):
    """Accumulation k=4 of micro-batch 16 vs plain bn at batch 64, same sample order, weights frozen.

    The loader's permutation does not depend on the batch size, so batch i of 64 is micro-batches
    4i..4i+3 of 16. A learning rate of 1e-30 leaves every float32 weight bit-identical, so the first
    norm layer sees the same inputs in both runs (later layers do not: their inputs depend on how the
    layers above normalized, over 16 or 64 samples).
    """
    common = ["optim.lr=1e-30", "calib.enabled=false"]
    aware = train(tiny_cfg(*common, "data.batch_size=16", "trainer.accumulate_grad_batches=4",
                           "norm.accumulation_aware=true", f"out_dir={tmp_path / 'a'}"))
    plain = train(tiny_cfg(*common, "data.batch_size=64", f"out_dir={tmp_path / 'p'}"))
    assert aware.summary["optimizer_steps"] == plain.summary["optimizer_steps"] == 4
    a, p = _first_norm(aware), _first_norm(plain)
    assert torch.equal(aware.module.net.features.conv1.weight, plain.module.net.features.conv1.weight)
    assert int(a.num_batches_tracked) == int(p.num_batches_tracked) == 4
    torch.testing.assert_close(a.running_mean, p.running_mean)
    torch.testing.assert_close(a.running_var, p.running_var)
    # plain bn under the same accumulation updates per micro-batch and lands elsewhere
    micro = train(tiny_cfg(*common, "data.batch_size=16", "trainer.accumulate_grad_batches=4",
                           f"out_dir={tmp_path / 'm'}"))
    assert int(_first_norm(micro).num_batches_tracked) == 16
    assert not torch.allclose(_first_norm(micro).running_var, p.running_var)


def test_boundary_callback_only_when_needed():
    from normbench.models import build_model
    from normbench.training.accumulation import accumulation_callbacks

    assert accumulation_callbacks(build_model("lenet", "bn")) == []
    (cb,) = accumulation_callbacks(build_model("lenet", "bn", norm_options={"accumulation_aware": True}))
    assert isinstance(cb, AccumulationBoundary)
