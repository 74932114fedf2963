"""Shared fixtures. The default tier runs on CPU in seconds; `slow` and `gpu` tests opt in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normbench.config import load_config

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")

# Tiny, fast overrides shared by the tests that train.
TINY = ["data=synthetic", "data.num_train=256", "data.num_test=128", "trainer.max_epochs=1",
        "trainer.progress_bar=false", "trainer.accelerator=cpu"]


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str):
        return load_config([*TINY, f"out_dir={tmp_path / 'run'}", *overrides])

    return make


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Runs `python -m normbench ...` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "normbench", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


requires_fmnist = pytest.mark.skipif(not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").exists(),
                                     reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
