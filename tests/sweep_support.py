"""Shared helpers of the sweep tests: a private configs/ tree with test sweep files, tiny settings."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
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

# One point (bn, batch 16, seed 0): the cheapest sweep that trains.
ONE_POINT = TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[16, 32]", "[16]").replace("[bn, gn]", "[bn]")

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
        # Ctrl-C's default action in the child: a shell starts background jobs (`cmd &`) with SIGINT ignored,
        # which the child would inherit, and Python then installs no KeyboardInterrupt handler.
        return subprocess.Popen([sys.executable, "-m", "normbench", "run", *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def summary_of(trial: optuna.trial.FrozenTrial) -> dict:
    """The run record (summary.json) a trial stores in the study."""
    from normbench.results import stored_summary

    return stored_summary(trial.user_attrs)


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


@pytest.fixture
def pg_url():
    """A fresh database on the loopback PostgreSQL server (.ci/start-postgres), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL server answers at {PG_URL} (start one: bash .ci/start-postgres): "
                    f"{str(e).splitlines()[0]}")
    name = f"normbench_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def free_port() -> int:
    """A TCP port nothing listens on right now (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PgCluster:
    """A throwaway PostgreSQL cluster (own data directory and port) that a test may stop and restart.

    The shared test server on 55432 is never touched: other engineers' tests use it at the same time.
    Like .ci/start-postgres, it runs as user postgres with trust authentication.
    """

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.data = Path(tempfile.mkdtemp(prefix="normbench-pg-"))
        self.port = free_port()
        shutil.chown(self.data, "postgres", "postgres")
        self._su(f"{self.bin}/initdb -D {self.data} -A trust -U postgres")

    def _su(self, cmd: str) -> None:
        proc = subprocess.run(["su", "postgres", "-c", cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd}: {proc.stderr or proc.stdout}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._su(f"{self.bin}/pg_ctl -D {self.data} -o '-p {self.port} -k /tmp -c listen_addresses=127.0.0.1' "
                 f"-l {self.data}/log -w start")

    def stop(self) -> None:
        self._su(f"{self.bin}/pg_ctl -D {self.data} -m fast -w stop")

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self._su(f"{self.bin}/pg_ctl -D {self.data} -m immediate -w stop")
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def pg_cluster():
    """A started throwaway PostgreSQL cluster, removed afterwards (skipped where none can be made)."""
    pytest.importorskip("psycopg")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries absent (/usr/lib/postgresql/*/bin; apt-get install postgresql)")
    if os.geteuid() != 0:
        pytest.skip("a throwaway PostgreSQL cluster is made with `su postgres -c initdb`, which needs root")
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextlib.contextmanager
def tmpfs(size: str, readonly: bool = False):
    """Mounts a size-limited tmpfs for the block's duration (skips the test when mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited tmpfs")
    where = Path(tempfile.mkdtemp(prefix="normbench-tmpfs-"))
    options = f"size={size}" + (",ro" if readonly else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()
