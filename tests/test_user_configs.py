"""Configs from outside the package: a user config directory (hydra.searchpath), sweep=PATH, and +group=choice."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from normbench.cli import main
from normbench.config import load_config
from normbench.results import stored_summary
from normbench.sweep.runner import prepare
from tests.helpers import TINY
from tests.sweep_support import TINY_BASE, SweepHome


@pytest.fixture
def user_dir(tmp_path) -> Path:
    """A user's own config directory: a norm, an experiment and a sweep the package does not ship."""
    root = tmp_path / "my configs"  # a space: the path must survive the override grammar and stored commands
    (root / "norm").mkdir(parents=True)
    (root / "norm" / "my_norm.yaml").write_text("name: gn\ngroups: 2\n")
    (root / "experiment").mkdir()
    (root / "experiment" / "my_exp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /norm: my_norm\n\nseed: 7\noptim:\n  lr: 0.25\n")
    (root / "sweep").mkdir()
    (root / "sweep" / "my_sweep.yaml").write_text(
        TINY_BASE + "  data.batch_size: 16\ngrid:\n  norm: [my_norm, bn]\nseeds: [0]\n")
    return root


def searchpath(root: Path) -> str:
    return f"hydra.searchpath=['file://{root}']"


def test_a_user_config_directory_adds_group_choices(user_dir):
    cfg = load_config([searchpath(user_dir), "norm=my_norm", *TINY])
    assert cfg.norm.name == "gn" and cfg.norm.groups == 2
    # a plain path works as well as a file:// URL; the package's own choices stay
    assert load_config([f"hydra.searchpath=['{user_dir}']", "norm=my_norm", *TINY]).norm.groups == 2
    assert load_config([searchpath(user_dir), "norm=gn", *TINY]).norm.groups is None


def test_plus_group_is_the_group_choice_also_for_experiments(user_dir):
    plain = load_config([searchpath(user_dir), "experiment=my_exp", *TINY])
    assert plain.seed == 7 and plain.optim.lr == 0.25 and plain.norm.groups == 2
    for prefix in ("+", "++"):
        assert load_config([searchpath(user_dir), f"{prefix}experiment=my_exp", *TINY]) == plain
        assert load_config([f"{prefix}experiment=d2l_lenet_bn", *TINY]) == load_config(["experiment=d2l_lenet_bn",
                                                                                        *TINY])
    assert OmegaConf.to_container(load_config(["+norm=ln", *TINY]).norm) == \
        OmegaConf.to_container(load_config(["norm=ln", *TINY]).norm)


def test_a_sweep_from_a_path_or_the_user_directory_runs_its_user_norm(user_dir, tmp_path, monkeypatch):
    home = SweepHome.create(tmp_path, monkeypatch)
    by_name, _ = prepare(["sweep=my_sweep", searchpath(user_dir), f"results_dir={home.results}"])
    by_path, _ = prepare([f"sweep={user_dir / 'sweep' / 'my_sweep.yaml'}", searchpath(user_dir),
                          f"results_dir={home.results}"])
    assert by_name.spec.name == by_path.spec.name == "my_sweep"
    assert by_name.spec.path == by_path.spec.path == str(user_dir / "sweep" / "my_sweep.yaml")

    args = [f"sweep={user_dir / 'sweep' / 'my_sweep.yaml'}", searchpath(user_dir), f"results_dir={home.results}",
            "sweep.max_trials=1"]
    assert main(["run", *args]) == 0
    (done,) = [t for t in home.trials("my_sweep") if t.state == TrialState.COMPLETE]
    assert done.user_attrs["params"]["norm"] == "my_norm"
    assert stored_summary(done.user_attrs)["config"]["norm"] == {"name": "gn", "groups": 2, "channels_per_group": None,
                                                               "eps": 1e-05, "affine": True}
    # the trial's stored command carries the search path: it composes the same config anywhere
    words = shlex.split(done.user_attrs["command"])
    assert f"hydra.searchpath=['file://{user_dir}']" in words
    assert load_config(words[4:]).norm.groups == 2
