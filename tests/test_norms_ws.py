"""gn_ws: the model's convolutions become weight-standardized (checked against NumPy), the norm is GroupNorm."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normbench import models
from normbench.models import build_model
from normbench.norms import build_norm, norm_factory
from normbench.norms.ws import WSConv2d, standardize_weight


def np_standardize(w, eps):
    flat = w.reshape(w.shape[0], -1)
    return ((flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + eps)).reshape(w.shape)


def test_standardize_weight_matches_numpy():
    w = torch.randn(6, 3, 3, 3, dtype=torch.float64) * 0.2 + 0.05
    np.testing.assert_allclose(standardize_weight(w, 1e-5).numpy(), np_standardize(w.numpy(), 1e-5), rtol=1e-12)


def test_wsconv_convolves_with_standardized_weight_and_keeps_conv_state():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=True).double()
    ws = WSConv2d.from_conv(conv, ws_eps=1e-4)
    assert ws.state_dict().keys() == conv.state_dict().keys() and torch.equal(ws.weight, conv.weight)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w_hat = torch.from_numpy(np_standardize(conv.weight.detach().numpy(), 1e-4))
    torch.testing.assert_close(ws(x), F.conv2d(x, w_hat, conv.bias, stride=2, padding=1))
    ws(x).sum().backward()
    assert ws.weight.grad is not None and torch.isfinite(ws.weight.grad).all()


@pytest.mark.parametrize("model_name", models.available())
def test_gn_ws_makes_every_conv_weight_standardized(model_name):
    plain = build_model(model_name, "gn", 10, 3, 64)
    ws = build_model(model_name, "gn_ws", 10, 3, 64, norm_options={"ws_eps": 1e-3})
    convs = [n for n, m in plain.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs and [n for n, m in ws.named_modules() if isinstance(m, WSConv2d)] == convs
    assert all(ws.get_submodule(n).ws_eps == 1e-3 for n in convs)
    assert not any(isinstance(m, WSConv2d) for m in plain.modules())
    assert ws.state_dict().keys() == plain.state_dict().keys()  # checkpoints interchange with plain convs
    assert all(isinstance(ws.get_submodule(s), nn.GroupNorm) for s in ws.norm_sites)


def test_gn_ws_through_a_factory_and_not_through_a_bare_callable():
    assert any(isinstance(m, WSConv2d) for m in build_model("resnet20", norm_factory("gn_ws"), 10, 3).modules())
    bare = build_model("resnet20", lambda c: nn.GroupNorm(1, c), 10, 3)
    assert not any(isinstance(m, WSConv2d) for m in bare.modules())


def test_gn_ws_norm_is_groupnorm_with_gn_options():
    m = build_norm("gn_ws", 16, groups=4)
    assert isinstance(m, nn.GroupNorm) and m.num_groups == 4
    with pytest.raises(ValueError, match="norm 'gn_ws': groups=3 does not divide num_channels=16"):
        build_norm("gn_ws", 16, groups=3)
    with pytest.raises(ValueError, match="norm 'gn_ws': ws_eps must be > 0"):
        build_norm("gn_ws", 16, ws_eps=0.0)
