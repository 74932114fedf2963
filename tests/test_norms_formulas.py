"""frn, evonorm_b0, evonorm_s0 and rms against their papers' formulas written out in NumPy."""

import numpy as np
import pytest
import torch
from torch import nn

from normbench.norms import build_norm


def _params(m, names, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            p = getattr(m, name)
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if name in ("weight", "v") else 0.0))
    return {name: getattr(m, name).detach().numpy().copy() for name in names}


def _c(v, ndim):  # per-channel vector -> broadcastable over (N, C, ...)
    return v.reshape([1, -1] + [1] * (ndim - 2))


SHAPES = [(3, 4, 5, 5), (6, 8)]


# ---- FRN ------------------------------------------------------------------------------------------------------

def np_frn(x, gamma, beta, tau, eps):
    nu2 = (x**2).mean(axis=tuple(range(2, x.ndim)), keepdims=True) if x.ndim > 2 else x**2
    y = _c(gamma, x.ndim) * x / np.sqrt(nu2 + eps) + _c(beta, x.ndim)
    return y if tau is None else np.maximum(y, _c(tau, x.ndim))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tlu", [True, False])
def test_frn_matches_formula(shape, tlu):
    m = build_norm("frn", shape[1], tlu=tlu, eps=1e-3).double()
    p = _params(m, ["weight", "bias"] + (["tau"] if tlu else []))
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for mode in (True, False):  # no batch statistics: train and eval agree
        m.train(mode)
        np.testing.assert_allclose(m(x).detach().numpy(), np_frn(x.numpy(), p["weight"], p["bias"], p.get("tau"), 1e-3),
                                   rtol=1e-10, atol=1e-12)


def test_frn_learnable_eps_is_per_channel_abs_and_learns():
    m = build_norm("frn", 4, learnable_eps=True, eps=1e-2).double()
    torch.testing.assert_close(m.eps_param.detach(), torch.full((4,), 1e-2, dtype=torch.float64))
    with torch.no_grad():
        m.eps_param.copy_(torch.tensor([-0.1, 0.2, 1e-3, 0.5], dtype=torch.float64))
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).abs() + 0.1  # above tau
    ref = np_frn(x.numpy(), np.ones(4), np.zeros(4), np.zeros(4), np.array([0.1, 0.2, 1e-3, 0.5])[None, :])
    y = m(x)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10)
    y.sum().backward()
    assert m.eps_param.grad is not None and torch.all(m.eps_param.grad != 0)
    assert build_norm("frn", 4).eps_param is None


# ---- EvoNorm --------------------------------------------------------------------------------------------------

def np_instance_var(x):
    return x.var(axis=1, keepdims=True) if x.ndim == 2 else x.var(axis=tuple(range(2, x.ndim)), keepdims=True)


def np_group_var(x, groups):
    n, c = x.shape[:2]
    v = x.reshape(n, groups, -1).var(axis=2)  # (N, G)
    return np.repeat(v, c // groups, axis=1).reshape([n, c] + [1] * (x.ndim - 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_evonorm_b0_matches_formula_and_tracks_unbiased_variance(shape):
    eps, momentum = 1e-5, 0.3
    m = build_norm("evonorm_b0", shape[1], momentum=momentum, eps=eps).double()
    p = _params(m, ["weight", "bias", "v"])
    running = np.ones(shape[1])
    rng = np.random.default_rng(0)
    dims = tuple(i for i in range(len(shape)) if i != 1)
    n = int(np.prod([shape[i] for i in dims]))

    def expected(x, var):
        left = np.sqrt(_c(var, x.ndim) + eps)
        right = _c(p["v"], x.ndim) * x + np.sqrt(np_instance_var(x) + eps)
        return x / np.maximum(left, right) * _c(p["weight"], x.ndim) + _c(p["bias"], x.ndim)

    for _ in range(3):
        x = rng.normal(1.0, 2.0, size=shape)
        batch_var = x.var(axis=dims)
        y = m(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(y, expected(x, batch_var), rtol=1e-10, atol=1e-12)
        running = (1 - momentum) * running + momentum * batch_var * n / (n - 1)
        np.testing.assert_allclose(m.running_var.numpy(), running, rtol=1e-12)
    m.eval()
    x = rng.normal(size=shape)
    np.testing.assert_allclose(m(torch.from_numpy(x)).detach().numpy(), expected(x, running), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_evonorm_s0_matches_formula(shape, groups):
    eps = 1e-5
    m = build_norm("evonorm_s0", shape[1], groups=groups, eps=eps).double()
    p = _params(m, ["weight", "bias", "v"])
    x = np.random.default_rng(1).normal(0.5, 1.5, size=shape)
    nd = x.ndim
    sig = 1 / (1 + np.exp(-_c(p["v"], nd) * x))
    ref = x * sig / np.sqrt(np_group_var(x, groups) + eps) * _c(p["weight"], nd) + _c(p["bias"], nd)
    np.testing.assert_allclose(m(torch.from_numpy(x)).detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_evonorm_s0_groups_default_and_errors():
    assert build_norm("evonorm_s0", 120).groups == 30
    assert build_norm("evonorm_s0", 8, channels_per_group=2).groups == 4
    with pytest.raises(ValueError, match="norm 'evonorm_s0': groups=3 does not divide num_channels=8"):
        build_norm("evonorm_s0", 8, groups=3)


# ---- RMSNorm --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_rms_matches_formula_and_torch_rmsnorm_channels_last(shape):
    eps = 1e-6
    m = build_norm("rms", shape[1], eps=eps, bias=True).double()
    p = _params(m, ["weight", "bias"])
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.3
    xn = x.numpy()
    ref = xn / np.sqrt((xn**2).mean(axis=1, keepdims=True) + eps) * _c(p["weight"], xn.ndim) + _c(p["bias"], xn.ndim)
    y = m(x)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    torch_rms = nn.RMSNorm(shape[1], eps=eps).double()
    with torch.no_grad():
        torch_rms.weight.copy_(m.weight)
    expected = torch_rms(x.movedim(1, -1)).movedim(-1, 1) + m.bias.reshape([1, -1] + [1] * (x.dim() - 2))
    torch.testing.assert_close(y, expected)


def test_rms_without_affine_has_no_parameters():
    assert list(build_norm("rms", 4, affine=False).parameters()) == []
    assert build_norm("rms", 4).bias is None


@pytest.mark.parametrize(("name", "opts"), [("frn", {"eps": 0.0}), ("evonorm_b0", {"momentum": 1.5}),
                                            ("evonorm_s0", {"eps": -1.0}), ("rms", {"eps": 0.0})])
def test_bad_options_name_norm_and_option(name, opts):
    with pytest.raises(ValueError, match=f"norm '{name}'.*{next(iter(opts))}"):
        build_norm(name, 4, **opts)
