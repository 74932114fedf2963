"""bn_scratch against torch's BatchNorm, and the PyTorch documentation's worked numbers."""

import pytest
import torch
from torch import nn

from normbench.norms import build_norm
from tests.helpers import assert_same_as_reference


def _pair(shape, **opts):
    c = shape[1]
    ref = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(
        c, momentum=opts.get("momentum", 0.1), eps=opts.get("eps", 1e-5), affine=opts.get("affine", True),
        track_running_stats=opts.get("track_running_stats", True)).double()
    ours = build_norm("bn_scratch", c, **opts).double()
    if opts.get("affine", True):
        with torch.no_grad():
            w, b = torch.randn(c, dtype=torch.float64), torch.randn(c, dtype=torch.float64)
            for m in (ref, ours):
                m.weight.copy_(w)
                m.bias.copy_(b)
    return ref, ours


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (16, 7), (2, 4, 1, 3)])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None, 0.0])
@pytest.mark.parametrize("affine", [True, False])
def test_scratch_matches_torch(shape, momentum, affine):
    torch.manual_seed(0)
    ref, ours = _pair(shape, momentum=momentum, affine=affine)
    assert_same_as_reference(ours, ref, shape)


def test_scratch_without_running_stats_uses_batch_stats_in_eval():
    torch.manual_seed(1)
    ref, ours = _pair((6, 3, 4, 4), track_running_stats=False)
    ref.eval()
    ours.eval()
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("name", ["bn", "bn_scratch"])
def test_pytorch_doc_example_running_stats(name):
    # torch.manual_seed(42); input (1,2,2,2); running_mean preset to 2, running_var to 1; momentum 0.1.
    torch.manual_seed(42)
    x = torch.randn(1, 2, 2, 2)
    m = build_norm(name, 2, momentum=0.1)
    with torch.no_grad():
        m.running_mean.fill_(2.0)
        m.running_var.fill_(1.0)
    m(x)
    torch.testing.assert_close(m.running_mean, torch.tensor([1.8233, 1.8065]), atol=1e-4, rtol=0)
    torch.testing.assert_close(m.running_var, torch.tensor([0.9007, 1.1187]), atol=1e-4, rtol=0)


def test_bn_accepts_2d_and_4d():
    m = build_norm("bn", 5)
    assert m(torch.randn(4, 5)).shape == (4, 5)
    assert m(torch.randn(4, 5, 3, 3)).shape == (4, 5, 3, 3)


def test_scratch_state_dict_interchangeable_with_torch():
    ours = build_norm("bn_scratch", 4)
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(ours.state_dict())
    ours.load_state_dict(ref.state_dict())
