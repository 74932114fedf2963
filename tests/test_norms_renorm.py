"""brn against torch's BatchNorm: r_max=1, d_max=0 is bn; otherwise bn with the weight gamma*r and bias
gamma*d + beta (r and d computed here in NumPy from the pre-update running statistics)."""

import numpy as np
import pytest
import torch
from torch import nn

from normbench.norms import build_norm
from normbench.norms.renorm import ramp
from tests.helpers import assert_same_as_reference


@pytest.mark.parametrize("shape", [(8, 3, 4, 4), (10, 6)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_brn_with_unit_limits_is_bn(shape, momentum):
    torch.manual_seed(0)
    ref = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1], momentum=momentum).double()
    ours = build_norm("brn", shape[1], r_max=1.0, d_max=0.0, momentum=momentum).double()
    with torch.no_grad():
        for m in (ref, ours):
            m.weight.copy_(torch.linspace(0.5, 2.0, shape[1]))
            m.bias.copy_(torch.linspace(-1.0, 1.0, shape[1]))
    assert_same_as_reference(ours, ref, shape, steps=4)


def _np_r_d(x, running_mean, running_var, eps, r_max, d_max):
    dims = (0, 2, 3) if x.ndim == 4 else (0,)
    mu_b, var_b = x.mean(axis=dims), x.var(axis=dims)
    sigma = np.sqrt(running_var + eps)
    r = np.clip(np.sqrt(var_b + eps) / sigma, 1 / r_max, r_max)
    d = np.clip((mu_b - running_mean) / sigma, -d_max, d_max)
    return r, d


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (9, 4)])
def test_brn_equals_bn_with_renormalized_affine(shape):
    torch.manual_seed(1)
    c, eps, r_max, d_max = shape[1], 1e-5, 1.5, 0.5
    ours = build_norm("brn", c, r_max=r_max, d_max=d_max, momentum=0.2).double()
    gamma, beta = torch.rand(c, dtype=torch.float64) + 0.5, torch.randn(c, dtype=torch.float64)
    with torch.no_grad():
        ours.weight.copy_(gamma)
        ours.bias.copy_(beta)
        ours.running_mean.copy_(torch.tensor([0.0, 3.0, -0.2, 0.1], dtype=torch.float64))
        ours.running_var.copy_(torch.tensor([1.0, 0.1, 9.0, 1.2], dtype=torch.float64))
    clipped = False
    for _ in range(3):
        x = torch.randn(*shape, dtype=torch.float64) * 2.0 + 1.0
        r, d = _np_r_d(x.numpy(), ours.running_mean.numpy().copy(), ours.running_var.numpy().copy(), eps, r_max,
                       d_max)
        r_bound = np.isclose(r, r_max) | np.isclose(r, 1 / r_max)
        clipped |= bool(np.any(np.isclose(np.abs(d), d_max)) and np.any(r_bound))
        ref = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(c, momentum=0.2).double()
        with torch.no_grad():
            ref.weight.copy_(gamma * torch.from_numpy(r))
            ref.bias.copy_(gamma * torch.from_numpy(d) + beta)
            ref.running_mean.copy_(ours.running_mean)
            ref.running_var.copy_(ours.running_var)
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        torch.testing.assert_close(yo, yr)
        g = torch.randn_like(yr)
        yr.backward(g)
        yo.backward(g)
        torch.testing.assert_close(xo.grad, xr.grad)  # r and d are constants for the gradient
        torch.testing.assert_close(ours.running_mean, ref.running_mean)
        torch.testing.assert_close(ours.running_var, ref.running_var)
        # d(loss)/d(gamma) = sum g (r x_hat + d), and the reference's grads are sum g x_hat and sum g
        torch.testing.assert_close(ours.weight.grad,
                                   torch.from_numpy(r) * ref.weight.grad + torch.from_numpy(d) * ref.bias.grad)
        ours.zero_grad()
    assert clipped  # the chosen running statistics make both limits bind at least once


def test_schedule():
    m = build_norm("brn", 2, r_max=3.0, d_max=5.0, warmup_steps=10, r_max_ramp_steps=20, d_max_ramp_steps=10)
    assert m.limits(0) == (1.0, 0.0) and m.limits(9) == (1.0, 0.0)
    assert m.limits(10) == (1.0, 0.0)
    assert m.limits(15) == pytest.approx((1.5, 2.5))
    assert m.limits(20) == pytest.approx((2.0, 5.0))
    assert m.limits(30) == pytest.approx((3.0, 5.0)) and m.limits(10_000) == pytest.approx((3.0, 5.0))
    assert ramp(5, 0, 0) == 1.0 and ramp(0, 1, 0) == 0.0
    # the layer's own step counter drives the schedule
    x = torch.randn(4, 2)
    for _ in range(15):
        m(x)
    assert m.limits() == pytest.approx((1.5, 2.5))


def test_warmup_is_bn():
    torch.manual_seed(3)
    ours, ref = build_norm("brn", 3, warmup_steps=5).double(), nn.BatchNorm1d(3).double()
    for _ in range(5):
        x = torch.randn(8, 3, dtype=torch.float64) * 3 + 2
        torch.testing.assert_close(ours(x), ref(x))
    x = torch.randn(8, 3, dtype=torch.float64) * 3 + 2
    assert not torch.allclose(ours(x), ref(x))


@pytest.mark.parametrize("opts", [{"r_max": 0.5}, {"d_max": -1.0}, {"warmup_steps": -1}, {"r_max_ramp_steps": -2},
                                  {"momentum": 2.0}])
def test_brn_bad_options(opts):
    with pytest.raises(ValueError, match=f"norm 'brn'.*{next(iter(opts))}"):
        build_norm("brn", 4, **opts)
