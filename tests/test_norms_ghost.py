"""ghost_bn against torch's BatchNorm: one ghost batch is bn; k ghost batches are k BatchNorms."""

import copy

import pytest
import torch
from torch import nn

from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.norms import build_norm
from normbench.run_facts import norm_batch_size
from tests.helpers import assert_same_as_reference


def _bn_like(shape, **opts):
    return (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1], **opts).double()


def _randomize_affine(*mods):
    c = mods[0].weight.shape[0]
    w, b = torch.rand(c, dtype=torch.float64) + 0.5, torch.randn(c, dtype=torch.float64)
    with torch.no_grad():
        for m in mods:
            m.weight.copy_(w)
            m.bias.copy_(b)


@pytest.mark.parametrize("shape", [(8, 3, 4, 4), (16, 5)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_ghost_batch_equal_to_batch_is_bn(shape, momentum):
    torch.manual_seed(0)
    ref = _bn_like(shape, momentum=momentum)
    ours = build_norm("ghost_bn", shape[1], ghost_batch_size=shape[0], momentum=momentum).double()
    _randomize_affine(ref, ours)
    assert_same_as_reference(ours, ref, shape)


@pytest.mark.parametrize("shape", [(12, 3, 2, 5), (12, 4)])
@pytest.mark.parametrize("momentum", [0.2, None])
def test_ghost_batches_are_independent_batchnorms(shape, momentum):
    # k = 3 ghost batches of 4: ghost j is samples j, j+3, j+6, j+9 (how a DistributedSampler deals them out).
    torch.manual_seed(1)
    k, g = 3, 4
    ours = build_norm("ghost_bn", shape[1], ghost_batch_size=g, momentum=momentum).double()
    refs = [_bn_like(shape, momentum=momentum) for _ in range(k)]
    _randomize_affine(ours, *refs)
    for step in range(3):
        x = torch.randn(*shape, dtype=torch.float64) * 2 + step
        out = torch.randn_like(x)
        xo = x.clone().requires_grad_()
        yo = ours(xo)
        yo.backward(out)
        expected, grad_in = torch.empty_like(x), torch.empty_like(x)
        for j, ref in enumerate(refs):
            xj = x[j::k].clone().requires_grad_()
            yj = ref(xj)
            yj.backward(out[j::k])
            expected[j::k], grad_in[j::k] = yj.detach(), xj.grad
        torch.testing.assert_close(yo, expected)
        torch.testing.assert_close(xo.grad, grad_in)
        torch.testing.assert_close(ours.weight.grad, sum(r.weight.grad for r in refs))
        torch.testing.assert_close(ours.bias.grad, sum(r.bias.grad for r in refs))
        # one update with the ghost batches' average == the average of k replicas' running statistics
        torch.testing.assert_close(ours.running_mean, sum(r.running_mean for r in refs) / k)
        torch.testing.assert_close(ours.running_var, sum(r.running_var for r in refs) / k)
        assert int(ours.num_batches_tracked) == step + 1
        for m in (ours, *refs):
            m.zero_grad()
    ours.eval()
    ref = copy.deepcopy(refs[0]).eval()
    ref.running_mean.copy_(ours.running_mean)
    ref.running_var.copy_(ours.running_var)
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x))


def test_batch_smaller_than_ghost_is_one_ghost_batch():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(build_norm("ghost_bn", 3, ghost_batch_size=32)(x), nn.BatchNorm2d(3)(x))


def test_ghost_not_dividing_batch_is_an_error():
    m = build_norm("ghost_bn", 3, ghost_batch_size=4)
    with pytest.raises(ValueError, match="norm 'ghost_bn': ghost_batch_size=4 does not divide the batch of 10"):
        m(torch.randn(10, 3))
    m.eval()
    assert m(torch.randn(10, 3)).shape == (10, 3)  # eval batches are normalized with the running statistics


@pytest.mark.parametrize("opts", [{"ghost_batch_size": 0}, {"momentum": -1.0}, {"eps": 0.0}])
def test_ghost_bad_options(opts):
    with pytest.raises(ValueError, match=f"norm 'ghost_bn'.*{next(iter(opts))}"):
        build_norm("ghost_bn", 4, **opts)


def test_config_checks_ghost_batch_size_against_batch_size():
    base = ["data=synthetic", "norm=ghost_bn", "data.batch_size=32"]
    assert norm_batch_size(load_config([*base, "norm.ghost_batch_size=8"])) == 8
    with pytest.raises(ConfigError, match="norm 'ghost_bn': ghost_batch_size=12 does not divide data.batch_size=32"):
        load_config([*base, "norm.ghost_batch_size=12"])
    with pytest.raises(ConfigError, match="needs data.drop_last=true"):
        load_config([*base, "norm.ghost_batch_size=8", "data.drop_last=false"])


def test_ghost_batch_larger_than_the_batch_is_plain_bn():
    # e.g. the default ghost batch of 32 on 4 images per emulated device: one ghost batch, plain BatchNorm
    cfg = load_config(["norm=ghost_bn", "data.batch_size=4", "norm.ghost_batch_size=32"])
    assert norm_batch_size(cfg) == 4
    torch.manual_seed(3)
    shape = (4, 3, 2, 2)
    ref = _bn_like(shape)
    ours = build_norm("ghost_bn", 3, ghost_batch_size=32).double()
    _randomize_affine(ref, ours)
    assert_same_as_reference(ours, ref, shape)
