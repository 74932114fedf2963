"""Every registered norm has configs/norm/<name>.yaml listing each of its options at its default."""

import pytest
from omegaconf import OmegaConf

from normbench.config import config_dir, load_config
from normbench.norms import available, get


@pytest.mark.parametrize("name", available())
def test_norm_yaml_lists_every_option_with_its_default(name):
    path = config_dir() / "norm" / f"{name}.yaml"
    assert path.is_file(), f"missing {path}"
    values = OmegaConf.to_container(OmegaConf.load(path))
    assert values.pop("name") == name
    assert values == get(name).defaults()


@pytest.mark.parametrize("name", available())
def test_norm_group_choice_composes_and_validates(name):
    cfg = load_config(["data=synthetic", f"norm={name}"])
    assert cfg.norm.name == name
