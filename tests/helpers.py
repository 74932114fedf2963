"""Helpers shared by the tests (plain functions and constants; the fixtures are in conftest.py).

Tests import them as `from tests.helpers import ...` (and the sweep helpers as `from tests.sweep_support
import ...`), one module name each: conftest is never imported by a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")

# Tiny, fast overrides shared by the tests that train.
TINY = ["data=synthetic", "data.num_train=256", "data.num_test=128", "trainer.max_epochs=1",
        "trainer.progress_bar=false", "trainer.accelerator=cpu"]


class CrashAtEpoch(L.Callback):
    """Fails a run when epoch `epoch` (1-based) starts: the process dies after the previous epoch's checkpoint."""

    def __init__(self, epoch: int = 2) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            raise RuntimeError("simulated crash")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Runs `python -m normbench ...` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "normbench", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


requires_fmnist = pytest.mark.skipif(not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").exists(),
                                     reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def assert_same_as_reference(ours: torch.nn.Module, ref: torch.nn.Module, shape: tuple[int, ...],
                             steps: int = 3) -> None:
    """Runs both layers on the same training batches, then one eval batch (float64, seeded by the caller).

    Checks outputs, input gradients, parameter gradients and running statistics at every step, so a norm
    claimed to equal a reference layer (usually torch's own) is compared on everything it computes.
    """
    for step in range(steps):
        x = torch.randn(*shape, dtype=torch.float64) * (step + 2) + 3 * step
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        torch.testing.assert_close(yo, yr, msg=f"output, step {step}")
        g = torch.randn_like(yr)
        yr.backward(g)
        yo.backward(g)
        torch.testing.assert_close(xo.grad, xr.grad, msg=f"input gradient, step {step}")
        for name, p in ref.named_parameters():
            torch.testing.assert_close(getattr(ours, name).grad, p.grad, msg=f"{name} gradient, step {step}")
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if getattr(ref, name, None) is not None:
                torch.testing.assert_close(getattr(ours, name), getattr(ref, name), msg=f"{name}, step {step}")
        ref.zero_grad()
        ours.zero_grad()
    ref.eval()
    ours.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), msg="eval")


def study_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> Path:
    """A project root holding one declared study (experiments/<name>.yaml), single-threaded, as NORMBENCH_ROOT."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / f"{name}.yaml").write_text(text)
    monkeypatch.setenv("NORMBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    return tmp_path
