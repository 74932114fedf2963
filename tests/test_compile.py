"""trainer.compile: the training forward/backward through torch.compile computes what the eager one does (the
same losses to float rounding, the same accuracy band), the record says it was compiled, and the steps during
which torch compiled are reported apart from the steady-state rate. (About 30-60 s: the compile itself.)"""

from __future__ import annotations

import math

import pytest
import torch

from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.train import train

RECIPE = ["data=synthetic", "data.num_train=512", "data.num_test=256", "data.batch_size=16", "trainer.max_epochs=2",
          "trainer.threads=1", "logger=none", "trainer.progress_bar=false"]


def _run(tmp_path, name: str, *overrides: str) -> dict:
    return train(load_config([*RECIPE, f"out_dir={tmp_path / name}", *overrides])).summary


def test_a_compiled_run_matches_the_eager_run(tmp_path):
    torch._dynamo.reset()  # compile here, whatever this process compiled before
    compiled = _run(tmp_path, "compiled", "trainer.compile=true")
    eager = _run(tmp_path, "eager")
    assert compiled["compiled"] is True and eager["compiled"] is False
    assert compiled["compile_steps"] >= 1 and compiled["compile_s"] > 0
    assert eager["compile_steps"] == 0 and eager["compile_s"] == 0
    assert compiled["config"]["trainer"]["compile"] is True
    for a, b in zip(compiled["history"], eager["history"], strict=True):
        assert math.isclose(a["train_loss_running"], b["train_loss_running"], rel_tol=1e-4)
    assert abs(compiled["test_acc"] - eager["test_acc"]) <= 0.02
    assert eager["test_acc"] > 0.5  # the recipe learns: the band is not two chance-level runs
    assert math.isclose(compiled["calib_kl"], eager["calib_kl"], rel_tol=1e-2, abs_tol=1e-4)
    # a second run in the same process reuses the compiled code (a sweep worker compiles once per shape)
    again = _run(tmp_path, "again", "trainer.compile=true")
    assert again["compile_steps"] == 0 and again["test_acc"] == compiled["test_acc"]


def test_compile_mode_is_checked():
    with pytest.raises(ConfigError, match="trainer.compile_mode"):
        load_config(["trainer.compile=true", "trainer.compile_mode=fastest"])
