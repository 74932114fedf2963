"""Every registered norm: builds, runs forward/backward on 4D and 2D inputs, rejects bad options."""

import pytest
import torch

from normbench.norms import available, build_norm, get, norm_factory
from normbench.norms.group import default_groups


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("shape", [(4, 12, 6, 6), (4, 12)])
def test_every_norm_forward_backward(name, shape):
    torch.manual_seed(0)
    m = build_norm(name, shape[1])
    x = torch.randn(*shape, requires_grad=True)
    for mode in (True, False):
        m.train(mode)
        y = m(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
    m.train()
    m(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", available())
def test_unknown_option_is_rejected_with_accepted_list(name):
    with pytest.raises(ValueError, match=rf"norm '{name}' has no option 'bogus'; accepted"):
        build_norm(name, 8, bogus=1)


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown norm 'nope'; accepted: bn, bn_scratch"):
        build_norm("nope", 8)


def test_name_variants_resolve():
    assert get("BatchNorm").name == get("batch_norm").name == "bn"
    assert get("GroupNorm").name == "gn"


@pytest.mark.parametrize("c", [6, 16, 120, 84, 64, 512, 7, 1])
def test_default_groups_divide(c):
    g = default_groups(c)
    assert c % g == 0 and 1 <= g <= 32
    assert c // g >= 2 or c == 1  # never InstanceNorm by default
    assert build_norm("gn", c).num_groups == g
    assert [default_groups(c) for c in (6, 16, 120, 84, 64, 512)] == [3, 8, 30, 28, 32, 32]


def test_gn_groups_must_divide():
    with pytest.raises(ValueError, match="norm 'gn': groups=4 does not divide num_channels=6"):
        build_norm("gn", 6, groups=4)


def test_gn_one_group_equals_ln_and_c_groups_equals_in():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 5)
    gn1 = build_norm("gn", 8, groups=1, affine=False)
    ln = build_norm("ln", 8, affine=False)
    ref_ln = torch.nn.functional.layer_norm(x, x.shape[1:], eps=1e-5)
    torch.testing.assert_close(gn1(x), ref_ln)
    torch.testing.assert_close(ln(x), ref_ln)
    gnc = build_norm("gn", 8, groups=8, affine=False)
    inorm = build_norm("in", 8, affine=False)
    torch.testing.assert_close(gnc(x), inorm(x))
    torch.testing.assert_close(inorm(x), torch.nn.functional.instance_norm(x, eps=1e-5))


def test_in_on_vectors_is_layernorm_over_features():
    x = torch.randn(5, 10)
    torch.testing.assert_close(build_norm("in", 10, affine=False)(x),
                               torch.nn.functional.layer_norm(x, (10,), eps=1e-5))


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_bad_momentum(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        build_norm("bn", 4, momentum=momentum)


def test_wrong_option_type():
    with pytest.raises(ValueError, match="option 'groups' must be"):
        build_norm("gn", 4, groups="two")


def test_factory_binds_options():
    f = norm_factory("gn", groups=2)
    assert f(8).num_groups == 2 and f.norm_name == "gn"


@pytest.mark.parametrize("value", [None, "None", "null"])
def test_optional_momentum_accepts_null_spellings(value):
    assert build_norm("bn", 4, momentum=value).momentum is None
