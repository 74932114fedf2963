"""Fixtures shared by the tests (the plain helpers are in tests/helpers.py)."""

from __future__ import annotations

import os

import pytest
import torch

from normbench.config import load_config
from tests.helpers import TINY
from tests.sweep_support import pg_cluster, pg_url  # noqa: F401 - fixtures shared by the sweep and fault tests


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str):
        return load_config([*TINY, f"out_dir={tmp_path / 'run'}", *overrides])

    return make
