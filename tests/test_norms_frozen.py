"""frozen_bn equals torch's BatchNorm in eval mode with the same statistics, in train mode too, and never changes."""

import pytest
import torch
from torch import nn

from normbench.norms import build_norm
from normbench.norms.frozen import FrozenBatchNorm


def _trained_bn(c=4, shape=(16, 4, 3, 3)):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(c).double()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c) + 0.5)
        bn.bias.copy_(torch.randn(c))
    for _ in range(3):
        bn(torch.randn(*shape, dtype=torch.float64) * 3 + 1)
    return bn.eval()


@pytest.mark.parametrize("shape", [(5, 4, 3, 3), (7, 4)])
def test_frozen_equals_bn_eval_in_both_modes(shape):
    bn = _trained_bn()
    frozen = build_norm("frozen_bn", 4).double()
    frozen.load_state_dict(bn.state_dict())  # BatchNorm checkpoints load (num_batches_tracked is dropped)
    x = torch.randn(*shape, dtype=torch.float64)
    ref = (bn if len(shape) == 4 else nn.BatchNorm1d(4).double().eval())
    if len(shape) == 2:
        ref.load_state_dict(bn.state_dict())
    for mode in (True, False):
        frozen.train(mode)
        torch.testing.assert_close(frozen(x), ref(x))
    torch.testing.assert_close(FrozenBatchNorm.from_batchnorm(bn).double()(x), ref(x))


def test_frozen_learns_and_updates_nothing():
    frozen = build_norm("frozen_bn", 3)
    assert list(frozen.parameters()) == []
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    x = torch.randn(8, 3, 2, 2, requires_grad=True) * 5 + 2
    frozen.train()
    frozen(x).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    # fresh: identity up to 1/sqrt(1 + eps)
    torch.testing.assert_close(frozen(x), x / (1 + 1e-5) ** 0.5)


def test_frozen_bad_options():
    with pytest.raises(ValueError, match="norm 'frozen_bn': eps must be > 0"):
        build_norm("frozen_bn", 3, eps=0.0)
    with pytest.raises(ValueError, match="norm 'frozen_bn' has no option 'momentum'"):
        build_norm("frozen_bn", 3, momentum=0.1)
