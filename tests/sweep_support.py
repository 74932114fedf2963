"""Shared helpers of the sweep tests: a private configs/ tree with test sweep files, tiny settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from normbench.config import config_dir
from normbench.sweep.locks import study_lock

REPO = Path(__file__).resolve().parents[1]

# Tiny synthetic runs: 96 training + 32 validation samples, 1 epoch, on the CPU.
TINY_BASE = """\
base:
  data: synthetic
  data.num_train: 128
  data.num_test: 64
  data.val_fraction: 0.25
  trainer.max_epochs: 1
  trainer.accelerator: cpu
"""

# 2 norms x 2 batch sizes x 2 seeds = 8 trials; fast heartbeats so that a dead worker is noticed in 3 s.
TINY_GRID = TINY_BASE + """\
grid:
  norm: [bn, gn]
  data.batch_size: [16, 32]
seeds: [0, 1]
objective: val_acc
heartbeat_interval: 1
grace_period: 3
"""

PG_URL = os.environ.get("NORMBENCH_PG_URL", "postgresql://postgres@127.0.0.1:55432/postgres")


@dataclass
class SweepHome:
    """A temporary configs/ (NORMBENCH_CONFIG_DIR) and results_dir for one test."""

    root: Path

    @classmethod
    def create(cls, tmp_path: Path, monkeypatch) -> SweepHome:
        shutil.copytree(config_dir(), tmp_path / "configs")
        monkeypatch.setenv("NORMBENCH_CONFIG_DIR", str(tmp_path / "configs"))
        # One thread per process: tiny models gain nothing from more, and a shared CPU loses a lot.
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        return cls(tmp_path)

    @property
    def results(self) -> Path:
        return self.root / "results"

    def write(self, name: str, text: str) -> None:
        (self.root / "configs" / "sweep" / f"{name}.yaml").write_text(text)

    def args(self, name: str, *extra: str) -> list[str]:
        return [f"sweep={name}", f"results_dir={self.results}", *extra]

    def storage(self, name: str) -> str:
        return f"sqlite:///{self.results / name / 'study.db'}"

    def trials(self, name: str, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
        url = storage or self.storage(name)
        with study_lock(url, name):  # a worker may be creating the tables right now
            return optuna.load_study(study_name=name, storage=url).get_trials()

    def popen(self, *args: str) -> subprocess.Popen:
        """`python -m normbench run ...` in a subprocess of this checkout."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen([sys.executable, "-m", "normbench", "run", *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_running(home: SweepHome, name: str, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Polls the study until a trial is RUNNING; returns its number."""
    deadline = time.monotonic() + timeout
    db = home.results / name / "study.db"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if db.exists():
            try:
                running = [t for t in home.trials(name) if t.state == optuna.trial.TrialState.RUNNING]
            except KeyError:  # the study is not created yet
                running = []
            if running:
                return running[0].number
        time.sleep(0.05)
    raise AssertionError("no trial started in time")


def point_counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """How many COMPLETE trials each point (params incl. seed) has."""
    counts: dict[str, int] = {}
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            key = repr(sorted(t.user_attrs["params"].items()))
            counts[key] = counts.get(key, 0) + 1
    return counts


def tiny_points() -> set[str]:
    return {repr(sorted({"norm": n, "data.batch_size": b, "seed": s}.items()))
            for n in ("bn", "gn") for b in (16, 32) for s in (0, 1)}
