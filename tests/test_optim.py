"""The optimizer a run builds (Classifier.configure_optimizers): SGD (momentum, Nesterov), AdamW, no scheduler
at a constant rate, and the norm layers' own weight decay (optim.norm_weight_decay, recorded)."""

from __future__ import annotations

import pytest
import torch

from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.models import build_model
from normbench.train import train
from normbench.training.module import Classifier


def _classifier(norm: str = "bn", **optim) -> Classifier:
    cfg = load_config(["data=synthetic", f"norm={norm}", *(f"optim.{k}={v}" for k, v in optim.items())])
    torch.manual_seed(0)
    net = build_model("lenet", norm, 10, 1, 28)
    return Classifier(net, dict(cfg.optim))


def _norm_params(module: Classifier) -> set[int]:
    net = module.net
    return {id(p) for site in net.norm_sites for p in net.get_submodule(site).parameters()}


def test_sgd_with_nesterov_momentum():
    opt = _classifier(lr=0.5, momentum=0.9, nesterov="true").configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.5, 0.9, True, 0.0)


def test_adamw_and_its_weight_decay():
    opt = _classifier(name="adamw", lr=0.001, weight_decay=0.01, norm_weight_decay="null").configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.01


def test_a_constant_rate_has_no_scheduler():
    """scheduler=none without warm-up: the bare optimizer, as before schedules existed (the numbers of committed
    studies depend on it); the schedules themselves are tested on real runs in tests/test_schedules.py."""
    module = _classifier(lr=0.8)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and module._scheduler is None
    assert opt.param_groups[0]["lr"] == 0.8 and "initial_lr" not in opt.param_groups[0]


def test_norm_parameters_get_their_own_weight_decay():
    module = _classifier(weight_decay=0.1, norm_weight_decay=0.0)
    opt = module.configure_optimizers()
    others, norms = opt.param_groups
    assert {id(p) for p in norms["params"]} == _norm_params(module) and len(norms["params"]) == 8  # 4 x (w, b)
    assert (others["weight_decay"], norms["weight_decay"]) == (0.1, 0.0)
    assert len(others["params"]) + len(norms["params"]) == len(list(module.parameters()))
    # one plain SGD step: p - lr * (grad + decay * p), the decay 0 on the norms' scales and shifts
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    before = {id(p): p.detach().clone() for p in module.parameters()}
    opt.step()
    for group, decay in ((others, 0.1), (norms, 0.0)):
        for p in group["params"]:
            torch.testing.assert_close(p.detach(), before[id(p)] - 1.0 * (1 + decay * before[id(p)]))


@pytest.mark.parametrize("norm_weight_decay, groups", [("null", 1), (0.1, 1), (0.0, 2)])
def test_one_group_when_the_decays_agree(norm_weight_decay, groups):
    opt = _classifier(weight_decay=0.1, norm_weight_decay=norm_weight_decay).configure_optimizers()
    assert len(opt.param_groups) == groups


def test_norm_weight_decay_is_checked_and_recorded(tiny_cfg):
    with pytest.raises(ConfigError, match=r"optim.norm_weight_decay must be >= 0 or null, got -0.1"):
        load_config(["optim.norm_weight_decay=-0.1"])
    assert load_config([]).optim.norm_weight_decay == 0.0
    s = train(tiny_cfg("optim.weight_decay=0.001", "optim.norm_weight_decay=null")).summary
    assert s["norm_weight_decay"] == 0.001 and s["config"]["optim"]["norm_weight_decay"] is None
