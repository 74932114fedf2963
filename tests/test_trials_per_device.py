"""sweep.trials_per_device: several small trials share one GPU, each worker pinned to its device. The device
assignment and the pinning of a worker process are checked here on CPU (CUDA_VISIBLE_DEVICES is what a worker
sees); running K trials on a real GPU is not tested here (no GPU in CI)."""

from __future__ import annotations

import os

import pytest

from normbench.errors import ConfigError
from normbench.sweep.runner import pin_cuda_device, worker_devices
from normbench.sweep.spec import parse_spec


def test_workers_fill_each_device_in_turn():
    assert worker_devices(6, 3, 2) == [0, 0, 0, 1, 1, 1]
    assert worker_devices(4, 3, 2) == [0, 0, 0, 1]
    assert worker_devices(3, None, 2) == [None, None, None]  # not set: every worker sees every device
    assert worker_devices(3, 2, 0) == [None, None, None]  # no CUDA: nothing to pin


def test_more_workers_than_device_slots_is_refused():
    with pytest.raises(ConfigError, match=r"sweep.n_workers=5 exceeds sweep.trials_per_device=2 x 2 CUDA"):
        worker_devices(5, 2, 2)


def test_trials_per_device_is_a_checked_sweep_setting():
    base = {"grid": {"norm": ["bn"]}}
    assert parse_spec("s", {**base, "trials_per_device": 4}).trials_per_device == 4
    assert parse_spec("s", base).trials_per_device is None
    with pytest.raises(ConfigError, match=r"trials_per_device must be >= 1 or null, got 0"):
        parse_spec("s", {**base, "trials_per_device": 0})


@pytest.mark.parametrize(("device", "visible", "seen"), [(1, None, "1"), (1, "4,6", "6"), (None, "4,6", "4,6")])
def test_a_worker_sees_only_its_device(monkeypatch, device, visible, seen):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    pin_cuda_device(device)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == seen
