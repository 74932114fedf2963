"""Config composition and validation: defaults, presets, aliases, types."""

import pytest

from normbench.config import compose, load_config
from normbench.errors import ConfigError


def test_default_is_the_d2l_recipe():
    cfg = load_config([])
    assert cfg.model.name == "lenet" and cfg.model.act == "sigmoid"
    assert cfg.norm.name == "bn" and cfg.norm.momentum == 0.1 and cfg.norm.eps == 1e-5
    assert cfg.data.name == "fashion_mnist" and cfg.data.batch_size == 256
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 1.0 and cfg.optim.momentum == 0.0
    assert cfg.trainer.max_epochs == 10 and cfg.trainer.accumulate_grad_batches == 1
    assert cfg.logger.name == "none" and cfg.seed == 0


def test_experiment_preset_equals_default():
    assert load_config(["experiment=d2l_lenet_bn"]) == load_config([])


def test_overrides_listed_in_the_issue_compose():
    cfg = load_config(["model=resnet20", "norm=gn", "norm.groups=2", "norm.eps=1e-3", "data=synthetic",
                       "data.root=/tmp", "data.batch_size=64", "data.train_subset=100", "data.test_subset=50",
                       "optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=5e-4", "trainer.max_epochs=3",
                       "trainer.accumulate_grad_batches=2", "trainer.accelerator=cpu", "seed=7", "out_dir=/tmp/x",
                       "logger=csv"])
    assert cfg.model.name == "resnet20" and cfg.norm.groups == 2 and cfg.norm.eps == 1e-3
    assert cfg.data.batch_size == 64 and cfg.trainer.accumulate_grad_batches == 2 and cfg.seed == 7
    assert cfg.optim.weight_decay == 5e-4 and cfg.logger.name == "csv"


def test_ints_accepted_for_floats_and_null_momentum():
    cfg = load_config(["optim.lr=1", "norm.momentum=null"])
    assert isinstance(cfg.optim.lr, float) and cfg.norm.momentum is None


def test_norm_alias_group_choice():
    assert load_config(["norm=GroupNorm"]).norm.name == "gn"


def test_precision_is_a_string():
    assert load_config(["trainer.precision=32"]).trainer.precision == "32"
    assert load_config(["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"


def test_every_config_file_composes():
    from normbench.config import SECTIONS, group_choices

    for group, section in SECTIONS.items():
        if not section.group:
            continue
        for choice in group_choices(group):
            compose([f"{group}={choice}"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="data.batch_size must be an integer, got 'big'"):
        load_config(["data.batch_size=big"])
