"""The ReLU ResNet workload (resnet_fmnist), norm + activation units, and the per-layer-kind norm record."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normbench import norms
from normbench.config import from_mapping, load_config
from normbench.models import build_model
from normbench.models.norm_act import with_legacy_norm_act
from normbench.norms.naming import norm_layers
from normbench.train import train
from normbench.training.checkpoint import config_differences
from tests.helpers import TINY, requires_fmnist, run_cli

REPLACING = ("frn", "evonorm_b0", "evonorm_s0")


def synthetic_batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """28x28 one-channel images and labels, as Fashion-MNIST's."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm_name", norms.available())
def test_resnet_fmnist_trains_a_step_with_every_norm(norm_name):
    torch.manual_seed(0)
    net = build_model("resnet_fmnist", norm_name, 10, 1, 28)
    x, y = synthetic_batch()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net.train()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    net.eval()
    assert net(x).shape == (8, 10)


@pytest.mark.parametrize(("depth", "width", "convs"), [(8, 16, 9), (14, 8, 15), (20, 16, 21)])
def test_a_norm_after_every_convolution(depth, width, convs):
    """depth - 1 3x3 convolutions + 2 shortcut projections, each followed by its own norm layer."""
    net = build_model("resnet_fmnist", "gn", 10, 1, 28, depth=depth, width=width)
    conv_sites = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(conv_sites) == convs
    assert len(net.norm_sites) == convs
    followed = {c: c.rsplit(".", 1)[0] + "." + c.rsplit(".", 1)[1].replace("conv", "norm") for c in conv_sites}
    assert sorted(followed.values()) == sorted(net.norm_sites)
    assert all(isinstance(net.get_submodule(s), nn.GroupNorm) for s in net.norm_sites)
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)][-1] == 4 * width
    assert net.norm_site_kinds == dict.fromkeys(net.norm_sites, "conv")


def _after_norm_activations(net: nn.Module) -> list[nn.Module]:
    """The module after each norm that an activation follows: the stem's and every block's first."""
    blocks = [m for m in net.modules() if hasattr(m, "act1")]
    return [net.stem.act, *(b.act1 for b in blocks)]


@pytest.mark.parametrize("norm_name", norms.available())
def test_paper_units_take_the_activations_place(norm_name):
    net = build_model("resnet_fmnist", norm_name, 10, 1, 28)
    acts = _after_norm_activations(net)
    expected = nn.Identity if norm_name in REPLACING else nn.ReLU
    assert all(type(a) is expected for a in acts), [type(a).__name__ for a in acts]
    # the activation after a block's sum is not the norm's: it stays
    assert all(isinstance(b.act2, nn.ReLU) for b in net.modules() if hasattr(b, "act2"))
    always = build_model("resnet_fmnist", norm_name, 10, 1, 28, norm_act="always")
    assert all(isinstance(a, nn.ReLU) for a in _after_norm_activations(always))


def test_frn_output_is_its_tlu_not_a_relu_under_paper():
    """With a negative TLU threshold, FRN's unit passes negative values that a ReLU after it would clip."""
    x, _ = synthetic_batch()
    outs = {}
    for mode in ("paper", "always"):
        torch.manual_seed(0)
        net = build_model("resnet_fmnist", "frn", 10, 1, 28, norm_act=mode)
        with torch.no_grad():
            net.stem.norm.tau.fill_(-1.0)
        outs[mode] = net.stem(x)
    assert outs["paper"].min() < 0 <= outs["always"].min()
    torch.testing.assert_close(outs["always"], outs["paper"].relu())


def test_registry_says_which_norms_replace_their_activation():
    assert [n for n in norms.available() if norms.replaces_activation(n)] == list(REPLACING)
    assert norms.replaces_activation(norms.norm_factory("frn")) is True
    assert norms.replaces_activation(lambda c: nn.BatchNorm2d(c)) is False


@pytest.mark.parametrize("norm_name", REPLACING)
def test_lenet_keeps_its_activation_by_default_and_drops_it_under_paper(norm_name):
    """LeNet's default is the committed studies' behaviour: a sigmoid after every norm, FRN/EvoNorm included."""
    default = build_model("lenet", norm_name, 10, 1, 28)
    assert [type(m).__name__ for m in (default.features.act1, default.classifier.act4)] == ["Sigmoid"] * 2
    paper = build_model("lenet", norm_name, 10, 1, 28, norm_act="paper")
    assert all(isinstance(paper.get_submodule(s), nn.Identity) for s in
               ("features.act1", "features.act2", "classifier.act3", "classifier.act4"))


def test_a_stored_lenet_config_without_norm_act_replays_as_it_ran():
    """A committed record's config predates model.norm_act: it composes to `always`, the old behaviour."""
    stored = {"model": {"name": "lenet", "act": "sigmoid"}, "norm": {"name": "frn"}}
    assert from_mapping(stored).model.norm_act == "always"
    assert load_config(["model=resnet_fmnist"]).model.norm_act == "paper"


def test_a_checkpoint_from_before_norm_act_resumes_lenet_but_not_a_resnet_under_paper():
    old = {"model": {"name": "lenet", "act": "sigmoid"}}
    assert config_differences(old, {"model": {"name": "lenet", "act": "sigmoid", "norm_act": "always"}}) == []
    assert with_legacy_norm_act({"model": {"name": "resnet20"}}) == {"model": {"name": "resnet20",
                                                                               "norm_act": "always"}}
    assert config_differences({"model": {"name": "resnet20"}},
                              {"model": {"name": "resnet20", "norm_act": "paper"}}) == [
        ("model.norm_act", "always", "paper")]


@pytest.mark.parametrize(("model", "norm_name", "expected"), [
    ("lenet", "in", {"conv": "InstanceNorm", "fc": "LayerNorm"}),
    ("lenet", "ln", {"conv": "LayerNorm", "fc": "LayerNorm"}),
    ("lenet", "bn", {"conv": "BatchNorm", "fc": "BatchNorm"}),
    ("lenet", "gn", {"conv": "GroupNorm", "fc": "GroupNorm"}),
    ("lenet", "none", {"conv": "Identity", "fc": "Identity"}),
    ("resnet_fmnist", "in", {"conv": "InstanceNorm"}),
])
def test_norm_layers_name_what_ran_per_layer_kind(model, norm_name, expected):
    net = build_model(model, norm_name, 10, 1, 28)
    assert norm_layers(net, net.norm_sites, net.norm_site_kinds) == expected


def test_norm_layers_name_the_layer_a_per_device_wrapper_holds():
    from normbench.norms.per_device import per_device

    net = build_model("lenet", per_device(norms.norm_factory("bn"), 4, 8), 10, 1, 28)
    assert norm_layers(net, net.norm_sites, net.norm_site_kinds) == {"conv": "BatchNorm per device",
                                                                      "fc": "BatchNorm per device"}


def test_run_records_norm_layers_and_the_cli_prints_them_once(tmp_path):
    proc = run_cli("run", *TINY, "norm=in", f"out_dir={tmp_path / 'in'}", "trainer.threads=1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("norm layers: conv InstanceNorm, fc LayerNorm") == 1
    import json

    summary = json.loads((tmp_path / "in" / "summary.json").read_text())
    assert summary["norm_layers"] == {"conv": "InstanceNorm", "fc": "LayerNorm"}


def test_a_tiny_resnet_run_learns(tmp_path):
    """Three epochs of resnet_fmnist + BN on the synthetic data: the training loss falls, accuracy beats chance.

    (Measured: running loss 2.34 -> 2.14 -> 1.67, test accuracy with population statistics 0.51. The EMA
    statistics of 48 steps are not settled yet, so test_acc itself is still near chance.)
    """
    cfg = load_config([*TINY, "model=resnet_fmnist", "model.width=4", "data.num_train=512", "data.num_test=256",
                       "data.noise=1.0", "trainer.max_epochs=3", "optim.lr=0.1", "optim.momentum=0.9",
                       "trainer.threads=1", "trainer.checkpoint=false", f"out_dir={tmp_path / 'r'}"])
    summary = train(cfg).summary
    losses = [e["train_loss_running"] for e in summary["history"]]
    assert summary["status"] == "ok" and summary["model"] == "resnet_fmnist"
    assert losses[0] > losses[1] > losses[2] and losses[2] < losses[0] - 0.3
    assert summary["test_acc_precise"] > 0.3  # 10 classes: chance is 0.1
    assert summary["norm_layers"] == {"conv": "BatchNorm"}
    assert summary["config"]["model"] == {"name": "resnet_fmnist", "depth": 8, "width": 4,
                                          "zero_init_residual": False, "norm_act": "paper"}


@pytest.mark.parametrize(("override", "message"), [
    ("model.depth=9", "model.depth must be 6n+2 with n >= 1 (accepted: 8, 14, 20, 26, 32, ...), got 9"),
    ("model.width=0", "model.width must be an integer >= 1, got 0"),
    ("model.norm_act=sometimes", "model.norm_act must be one of paper, always; got 'sometimes'"),
])
def test_bad_resnet_options_fail_before_any_work(tmp_path, override, message):
    proc = run_cli("run", "model=resnet_fmnist", override, f"out_dir={tmp_path / 'x'}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "x").exists()


def test_experiment_preset_is_the_measured_recipe():
    cfg = load_config(["experiment=resnet_fmnist"])
    assert dict(cfg.model) == {"name": "resnet_fmnist", "depth": 8, "width": 8, "zero_init_residual": False,
                               "norm_act": "paper"}
    assert (cfg.norm.name, cfg.data.name, cfg.data.batch_size, cfg.data.train_subset) == ("bn", "fashion_mnist",
                                                                                           128, 20000)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.scheduler) == (
        "sgd", 0.1, 0.9, 5e-4, "cosine")
    assert (cfg.trainer.max_epochs, cfg.trainer.threads) == (3, 1)


@requires_fmnist
def test_experiment_preset_runs_on_real_fashion_mnist(tmp_path):
    cfg = load_config(["experiment=resnet_fmnist", "norm=frn", "trainer.fast_dev_run=true",
                       "trainer.progress_bar=false", f"out_dir={tmp_path / 'r'}"])
    summary = train(cfg).summary
    assert summary["status"] == "ok" and summary["n_train"] == 20000 and summary["n_test"] == 10000
    assert summary["norm_layers"] == {"conv": "FilterResponseNorm"}
    assert summary["config"]["model"]["norm_act"] == "paper"


def test_a_sweep_from_before_norm_act_resumes_on_lenet_and_is_refused_under_paper(tmp_path, monkeypatch):
    """A study whose stored base config predates model.norm_act ran `always`: LeNet (default always) resumes it;
    asking for `paper` is refused with the difference named."""
    import optuna

    from normbench.errors import ConfigError
    from normbench.sweep import run_sweep
    from tests.sweep_support import ONE_POINT, SweepHome

    home = SweepHome.create(tmp_path, monkeypatch)
    home.write("old", ONE_POINT)
    assert run_sweep(home.args("old")) == 0
    study = optuna.load_study(study_name="old", storage=home.storage("old"))
    base = study.user_attrs["base_config"]
    assert base["model"].pop("norm_act") == "always"
    study.set_user_attr("base_config", base)  # as normbench stored it before the option existed
    assert run_sweep(home.args("old")) == 0  # nothing left to run, and nothing refused
    with pytest.raises(ConfigError, match=r"other settings \(model.norm_act: 'always' -> 'paper'\)"):
        run_sweep(home.args("old", "model.norm_act=paper"))
