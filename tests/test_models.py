"""Every model x every norm builds, runs forward/backward, and keeps norms out of the model code."""

import pytest
import torch

from normbench import models, norms
from normbench.models import build_model

# The ImageNet stem downsamples 32x before the last stage: at 16 pixels InstanceNorm would see 1x1 maps there.
MIN_IMAGE_SIZE = {"resnet18_imagenet": 64}


def _size(model_name):
    return max(16, MIN_IMAGE_SIZE.get(model_name, 0))


@pytest.mark.parametrize("model_name", models.available())
@pytest.mark.parametrize("norm_name", norms.available())
def test_every_model_with_every_norm(model_name, norm_name):
    torch.manual_seed(0)
    size = _size(model_name)
    net = build_model(model_name, norm_name, num_classes=10, in_channels=3, image_size=size)
    x = torch.randn(2, 3, size, size)
    for mode in (True, False):
        net.train(mode)
        y = net(x)
        assert y.shape == (2, 10) and torch.isfinite(y).all()
    net.train()
    net(x).logsumexp(1).sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_lenet_has_d2l_layout():
    net = build_model("lenet", "bn", 10, 1, 28)
    assert net.norm_sites == ["features.norm1", "features.norm2", "classifier.norm3", "classifier.norm4"]
    assert [type(m).__name__ for m in net.features] == [
        "Conv2d", "BatchNorm", "Sigmoid", "AvgPool2d", "Conv2d", "BatchNorm", "Sigmoid", "AvgPool2d", "Flatten"]
    assert net.classifier.fc1.in_features == 16 * 4 * 4
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_resnet20_structure():
    net = build_model("resnet20", "bn", 10, 3, 32)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19  # 1 stem + 18 in blocks; + fc = 20 weighted layers
    assert sum(p.numel() for p in net.parameters()) < 300_000
    # the norm is used at downsample sites too
    assert "layers.1.0.downsample.norm" in net.norm_sites


def test_groups_error_names_layer():
    msg = r"groups=4 does not divide num_channels=6 \(layer 'features.norm1' of lenet\)"
    with pytest.raises(ValueError, match=msg):
        build_model("lenet", "gn", norm_options={"groups": 4})


# every norm, plus norms without a learnable scale (the block's last conv is zeroed instead)
ZERO_INIT_CASES = [(n, {}) for n in norms.available()] + [
    ("bn", {"affine": False}), ("gn", {"affine": False}), ("in", {"affine": False}), ("rms", {"affine": False}),
    ("gn_ws", {"affine": False})]


@pytest.mark.parametrize(("norm_name", "norm_options"), ZERO_INIT_CASES)
def test_zero_init_residual_makes_blocks_identity(norm_name, norm_options):
    net = build_model("resnet20", norm_name, 10, 3, 32, norm_options=norm_options, zero_init_residual=True)
    block = net.layers[0][0]
    x = torch.randn(4, 16, 8, 8).relu()
    for mode in (False, True):
        net.train(mode)
        torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("norm_name", norms.available())
def test_norm_layers_initialized_to_identity_affine(norm_name):
    net = build_model("resnet20", norm_name, 10, 3, 32)
    for site in net.norm_sites:
        m = net.get_submodule(site)
        for name, value in (("weight", 1.0), ("bias", 0.0)):
            tensor = getattr(m, name, None)
            if tensor is not None:
                assert torch.equal(tensor, torch.full_like(tensor, value)), (site, name)


def _next_modules(net: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{norm site: the module registered right after it in its parent} (where the activation of a unit sits)."""
    out = {}
    for site in net.norm_sites:
        parent_name, _, leaf = site.rpartition(".")
        if leaf == "norm2" and hasattr(net.get_submodule(parent_name), "downsample"):
            continue  # a residual block's act2 follows the sum, not its last norm
        children = list(net.get_submodule(parent_name).named_children())
        names = [n for n, _ in children]
        i = names.index(leaf)
        if i + 1 < len(children) and children[i + 1][0].startswith("act"):
            out[site] = children[i + 1][1]
    return out


@pytest.mark.parametrize("model_name", models.available())
@pytest.mark.parametrize("norm_name", ["frn", "evonorm_b0", "evonorm_s0", "bn", "gn"])
def test_norm_act_paper_drops_only_the_activation_a_norm_replaces(model_name, norm_name):
    size = _size(model_name)
    paper = _next_modules(build_model(model_name, norm_name, 10, 3, size, norm_act="paper"))
    always = _next_modules(build_model(model_name, norm_name, 10, 3, size, norm_act="always"))
    assert paper and paper.keys() == always.keys()
    assert not any(isinstance(m, torch.nn.Identity) for m in always.values())
    replaced = norms.replaces_activation(norm_name)
    assert all(isinstance(m, torch.nn.Identity) == replaced for m in paper.values())


@pytest.mark.parametrize("model_name", models.available())
def test_every_norm_site_knows_its_layer_kind(model_name):
    size = _size(model_name)
    net = build_model(model_name, "bn", 10, 3, size)
    expected = {"conv"} if model_name != "lenet" else {"conv", "fc"}
    assert net.norm_site_kinds.keys() == set(net.norm_sites)
    assert set(net.norm_site_kinds.values()) == expected
    if model_name == "lenet":
        assert net.norm_site_kinds == {"features.norm1": "conv", "features.norm2": "conv",
                                       "classifier.norm3": "fc", "classifier.norm4": "fc"}


def test_resnet_fmnist_depth_and_width():
    net = build_model("resnet_fmnist", "bn", 10, 1, 28)
    assert [len(stage) for stage in net.layers] == [1, 1, 1]
    assert [stage[0].conv1.out_channels for stage in net.layers] == [8, 16, 32]
    deep = build_model("resnet_fmnist", "bn", 10, 1, 28, depth=20, width=16)
    ref = build_model("resnet20", "bn", 10, 1, 28)
    assert [tuple(p.shape) for p in deep.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    with pytest.raises(ValueError, match=r"model.depth must be 6n\+2"):
        build_model("resnet_fmnist", "bn", 10, 1, 28, depth=10)
