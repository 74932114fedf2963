"""Faults injected into real runs: a corrupt or full disk, a PostgreSQL outage, W&B without network, secrets
that must never be stored, memory that must not grow. Each ends with one clear line or is survived; no
stored result is lost or damaged.
"""

from __future__ import annotations

import gc
import http.server
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from normbench.cli import main
from normbench.data import InMemoryData
from normbench.sweep import final_trials, run_sweep
from normbench.sweep.runner import prepare
from normbench.sweep.study import SweepStudy
from normbench.sweep.worker import Worker
from tests.sweep_support import (
    ONE_POINT,
    REPO,
    TINY_GRID,
    SweepHome,
    free_port,
    point_counts,
    tiny_points,
    tmpfs,
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> SweepHome:
    return SweepHome.create(tmp_path, monkeypatch)


def one_error_line(stderr: str) -> str:
    """The last stderr line, which must be an `error:` line, with no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    return lines[-1]


def assert_every_point_once(trials) -> None:
    finals = final_trials(trials)
    assert {t.state for t in finals} == {TrialState.COMPLETE}, [(t.number, t.state) for t in finals]
    counts = point_counts(finals)
    assert set(counts) == tiny_points() and set(counts.values()) == {1}


# ---------------------------------------------------------------- corrupt study database (item 8)


def stored_study(home: SweepHome, name: str, n: int = 60) -> Path:
    """A study as a sweep leaves it, with enough trials to span many database pages."""
    (home.results / name).mkdir(parents=True)
    db = home.results / name / "study.db"
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{db}", direction="maximize")
    for i in range(n):
        summary = {"status": "ok", "test_acc": 0.5 + i / 1000, "history": [{"epoch": e, "x": e * i} for e in range(9)]}
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs={
            "params": {"norm": "bn", "seed": i}, "summary": summary, "config_id": "c"}))
    del study
    gc.collect()
    return db


@pytest.mark.parametrize("damage", ["middle", "header"])
def test_corrupt_study_db_is_one_line_exit_1_and_left_as_it_was(home, damage, capsys):
    home.write("tiny", ONE_POINT)
    db = stored_study(home, "tiny")
    data = bytearray(db.read_bytes())
    rng = random.Random(0)
    if damage == "middle":  # random bytes over three pages in the middle of the file
        mid = (len(data) // 2) // 4096 * 4096
        data[mid: mid + 3 * 4096] = bytes(rng.randrange(256) for _ in range(3 * 4096))
    else:
        data[:] = bytes(rng.randrange(256) for _ in range(len(data)))
    db.write_bytes(bytes(data))
    for argv in (["run", *home.args("tiny")], ["table", *home.args("tiny")]):
        assert main(argv) == 1
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {db} is corrupt (") and "without writing to it" in line, line
        assert db.read_bytes() == bytes(data)
    assert not (home.results / "tiny" / "trials").exists()


# ---------------------------------------------------------------- full disk (item 8)


def test_disk_full_mid_sweep_is_one_line_exit_1_and_resumable(home):
    home.write("tiny", TINY_GRID.replace("trainer.max_epochs: 1", "trainer.max_epochs: 3"))
    with tmpfs("24m") as disk:
        results = disk / "results"
        proc = home.popen("sweep=tiny", f"results_dir={results}")
        db = results / "tiny" / "study.db"
        deadline = time.monotonic() + 120
        while not list((results / "tiny" / "trials").glob("*/summary.json")):  # one trial stored: fill the disk
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        filler = disk / "filler"
        try:  # the sweep's own files may have filled the disk already, even before the filler opens
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 16))
                    f.flush()
        except OSError:
            pass
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 1, out
        line = one_error_line(out)
        assert line.startswith(f"error: disk full: cannot write {results}/tiny/") and "free space, then rerun" in line
        filler.unlink()
        assert run_sweep(["sweep=tiny", f"results_dir={results}"]) == 0
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert_every_point_once(home.trials("tiny", storage=f"sqlite:///{db}"))


# ---------------------------------------------------------------- PostgreSQL outage (item 6)


def ride_out_outage(home: SweepHome, cluster, seconds: float, sweep_file: str) -> None:
    """Runs a 2-worker sweep on `cluster`, stops the server for `seconds` mid-sweep; the sweep must finish."""
    home.write("tiny", sweep_file)
    url = cluster.url
    proc = home.popen("sweep=tiny", f"sweep.storage={url}", "sweep.n_workers=2", *home.args("tiny")[1:])
    deadline = time.monotonic() + 180
    while not any(t.state == TrialState.RUNNING for t in _pg_trials(url)):  # mid-sweep: the first trial runs
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    cluster.stop()
    time.sleep(seconds)  # every process hits the storage meanwhile: the coordinator polls it every second
    cluster.start()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "unreachable" in out and "reachable again" in out, out
    trials = _pg_trials(url)
    assert_every_point_once(trials)
    assert len(trials) == len(tiny_points())  # no live worker's trial was taken for dead and re-run
    for log in (home.results / "tiny" / "workers").glob("*.log"):
        assert "Traceback" not in log.read_text()


def test_sweep_rides_out_a_postgresql_restart_and_stops_cleanly_on_a_long_outage(home, pg_cluster):
    """Coordinator and two workers through a restart (outage > grace_period); then an outage longer than the
    patience: one line, exit 1, and a study that resumes."""
    ride_out_outage(home, pg_cluster, 6, TINY_GRID.replace("grace_period: 3", "grace_period: 4"))
    url = pg_cluster.url
    proc = home.popen("sweep=tiny", f"sweep.storage={url}", "sweep.storage_patience=3",
                      *home.args("tiny", "sweep.seeds=[0,1,2]")[1:])
    deadline = time.monotonic() + 180
    while not any(t.state == TrialState.RUNNING for t in _pg_trials(url)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    pg_cluster.stop()
    out, _ = proc.communicate(timeout=120)
    pg_cluster.start()
    assert proc.returncode == 1, out
    line = one_error_line(out)
    assert line.startswith(f"error: storage {url} unreachable for 3 s (connection failed: ") and \
        "stopped after sweep.storage_patience=3 s. Everything stored is intact: rerun the same command" in line
    assert run_sweep(home.args("tiny", f"sweep.storage={url}", "sweep.seeds=[0,1,2]")) == 0
    finals = final_trials(_pg_trials(url))
    assert len(finals) == 12 and {t.state for t in finals} == {TrialState.COMPLETE}
    assert set(point_counts(finals).values()) == {1}


@pytest.mark.slow
def test_sweep_rides_out_a_postgresql_outage_of_over_a_minute_with_default_settings(home, pg_cluster):
    """Default heartbeat (10 s), grace period (60 s) and patience (300 s): a 65 s outage is survived."""
    ride_out_outage(home, pg_cluster, 65, TINY_GRID.replace("heartbeat_interval: 1\ngrace_period: 3\n", ""))


def _pg_trials(url: str) -> list:
    try:
        return optuna.load_study(study_name="tiny", storage=url).get_trials()
    except KeyError:  # not created yet
        return []


# ---------------------------------------------------------------- W&B without network (item 7)


class Unavailable(http.server.BaseHTTPRequestHandler):
    """A W&B host that answers every request with 503 (reachable, but no run can start)."""

    def _fail(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _fail

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def wandb_host(request):
    """The W&B base URL for the case: nothing listening there, or a server that fails every request."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{free_port()}", "W&B is unreachable (127.0.0.1:"
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", "W&B online run did not start (CommError"
    finally:
        server.shutdown()


# "failing": wandb's own shutdown then retries its telemetry against the failing host for ~40 s: slow tier.
@pytest.mark.parametrize("wandb_host", ["refused", pytest.param("failing", marks=pytest.mark.slow)], indirect=True)
def test_wandb_without_network_falls_back_to_offline_with_one_warning(tmp_path, wandb_host, monkeypatch):
    base_url, expected = wandb_host
    monkeypatch.delenv("WANDB_MODE", raising=False)
    env = {"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": base_url, "WANDB_CONSOLE": "off",
           "WANDB_INIT_TIMEOUT": "6",  # today's code waits this long (default 90 s), then loses the run
           "PYTHONPATH": str(REPO)}
    for var, sub in (("WANDB_CONFIG_DIR", "cfg"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        env[var] = str(tmp_path / "wandb-env" / sub)
    out_dir, results = tmp_path / "run", tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "normbench", "run", "data=synthetic", "data.num_train=64", "data.num_test=32",
         "trainer.max_epochs=1", "trainer.progress_bar=false", "logger=wandb", f"out_dir={out_dir}",
         f"results_dir={results}"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert json.loads((out_dir / "summary.json").read_text())["status"] == "ok"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: W&B")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {expected}"), proc.stderr
    assert "logging this run offline" in warnings[0] and "wandb sync" in warnings[0]
    assert len(list((out_dir / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


# ---------------------------------------------------------------- secrets (item 5)


def test_a_storage_password_is_never_stored(home, pg_url, tmp_path, monkeypatch):
    secret = "Hunter2Secret"
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    url = f"postgresql://{user}:{secret}@{rest}"  # the test server trusts loopback: any password connects
    home.write("two", ONE_POINT.replace("seeds: [0]", "seeds: [0, 1]"))
    wandb_dir = tmp_path / "wandb-env"
    env = {"WANDB_MODE": "offline", "WANDB_CONSOLE": "off", "WANDB_CONFIG_DIR": str(wandb_dir / "cfg"),
           "WANDB_CACHE_DIR": str(wandb_dir / "cache"), "WANDB_DATA_DIR": str(wandb_dir / "data")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    proc = home.popen(*home.args("two", f"sweep.storage={url}", "sweep.n_workers=2", "logger=wandb"))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert secret not in out
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "two.yaml"]
    assert any(p.suffix == ".wandb" for p in written) and any(p.name == "trials.csv" for p in written)
    assert [str(p) for p in written if secret.encode() in p.read_bytes()] == []
    study = optuna.load_study(study_name="two", storage=url)
    stored = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id),
                         [(t.user_attrs, t.system_attrs) for t in study.get_trials()]])
    assert "sweep.storage" not in stored and "postgresql://postgres:***@" in stored
    assert secret not in stored
    assert len(study.get_trials()) == 2


# ---------------------------------------------------------------- small ones (item 9)


def test_memory_of_finished_trials_is_released(home):
    home.write("tiny", TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]"))
    plan, url = prepare(home.args("tiny"))
    (home.results / "tiny").mkdir(parents=True)
    live: list[int] = []

    def on_trial_end(outcome, trials):
        live.append(sum(type(o) is InMemoryData for o in gc.get_objects()))

    sweep_study = SweepStudy(plan, url)
    try:
        Worker(sweep_study, on_trial_end=on_trial_end).run()
    finally:
        sweep_study.close()
    assert live == [0, 0, 0, 0]  # no finished trial's data (nor its model and trainer) outlives it
