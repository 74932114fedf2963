"""Several workers on one study (SQLite, PostgreSQL), and workers that die or are interrupted mid-trial."""

from __future__ import annotations

import csv
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from normbench.sweep import final_trials, run_sweep
from normbench.sweep.study import LOST_WORKER_REASON
from normbench.sweep.worker import INTERRUPTED_REASON
from tests.sweep_support import TINY_GRID, SweepHome, point_counts, tiny_points, wait_for_running


@pytest.fixture
def home(tmp_path, monkeypatch) -> SweepHome:
    return SweepHome.create(tmp_path, monkeypatch)


def assert_every_point_once(trials) -> None:
    assert {t.state for t in trials} == {TrialState.COMPLETE}, [(t.number, t.state) for t in trials]
    counts = point_counts(trials)
    assert set(counts) == tiny_points() and set(counts.values()) == {1}
    assert len(trials) == len(tiny_points())


def test_two_worker_processes_share_one_sqlite_study(home, capsys):
    home.write("tiny", TINY_GRID)
    assert run_sweep(home.args("tiny", "sweep.n_workers=2")) == 0  # this process reports, two processes work
    out = capsys.readouterr().out
    assert "2 worker processes" in out and "sweep tiny: 8/8 trials done" in out
    assert [line[:5] for line in out.splitlines() if line.startswith("[")] == [f"[{k}/8]" for k in range(1, 9)]
    trials = home.trials("tiny")
    assert_every_point_once(trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert 1 <= len(workers) <= 2 and all(":" in w for w in workers)
    logs = sorted((home.results / "tiny" / "workers").glob("*.log"))
    assert len(logs) == 2


def test_two_commands_share_one_postgresql_study(home, pg_url):
    """What N machines do: the same command twice at once, one PostgreSQL study, a fresh database."""
    home.write("tiny", TINY_GRID)
    procs = [home.popen(*home.args("tiny", f"sweep.storage={pg_url}", f"results_dir={home.root / f'm{k}'}"))
             for k in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = home.trials("tiny", storage=pg_url)
    assert_every_point_once(trials)
    # Each machine keeps the run directories of the trials it ran (under its own results_dir).
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parents[2] in (home.root / "m0", home.root / "m1")
        assert (run_dir / "summary.json").is_file()


def _slow_grid() -> str:
    return TINY_GRID.replace("trainer.max_epochs: 1", "trainer.max_epochs: 60").replace(
        "norm: [bn, gn]", "norm: [bn]").replace("[16, 32]", "[16]")


def test_killed_worker_trial_is_requeued_and_the_study_completes(home):
    home.write("slow", _slow_grid())  # 2 points (seeds 0, 1), a few seconds each (60 epochs of tiny data)
    proc = home.popen(*home.args("slow"))
    number = wait_for_running(home, "slow", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert home.trials("slow")[number].state == TrialState.RUNNING  # left behind, heartbeat stops

    start = time.monotonic()
    assert run_sweep(home.args("slow")) == 0
    trials = home.trials("slow")
    killed = trials[number]
    assert killed.state == TrialState.FAIL and killed.user_attrs["fail_reason"] == LOST_WORKER_REASON
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["params"] == killed.user_attrs["params"]
    assert retry.user_attrs["run_dir"].endswith(f"/trials/{retry.number}") and retry.user_attrs["fail_reason"] is None
    finals = final_trials(trials)
    assert killed not in finals and {t.state for t in finals} == {TrialState.COMPLETE}
    assert sorted(t.user_attrs["params"]["seed"] for t in finals) == [0, 1]
    assert time.monotonic() - start < 120


def test_interrupted_worker_requeues_its_trial_at_once(home):
    home.write("slow", _slow_grid())
    proc = home.popen(*home.args("slow"))
    number = wait_for_running(home, "slow", proc)
    run_dir = home.results / "slow" / "trials" / str(number)
    while not run_dir.exists() and proc.poll() is None:  # train() has built the model: fit() is next
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    # 130, or killed by SIGINT when the signal lands in an import (CPython then re-raises it at exit).
    assert proc.returncode in (130, -signal.SIGINT), out
    assert out.rstrip().endswith("interrupted"), out
    trials = home.trials("slow")
    assert trials[number].state == TrialState.FAIL
    assert trials[number].user_attrs["fail_reason"] == INTERRUPTED_REASON
    (copy,) = [t for t in trials if t.state == TrialState.WAITING and
               t.system_attrs.get("retry_history") == [number]]
    assert copy.user_attrs["params"] == trials[number].user_attrs["params"]
    with open(home.results / "slow" / "trials.csv") as f:  # refreshed at the interrupt: no trial left RUNNING
        states = {int(r["number"]): r["state"] for r in csv.DictReader(f)}
    assert states[number] == "FAIL" and states[copy.number] == "WAITING" and "RUNNING" not in states.values()

    assert run_sweep(home.args("slow")) == 0  # no heartbeat wait: the copy is already queued
    finals = final_trials(home.trials("slow"))
    assert {t.state for t in finals} == {TrialState.COMPLETE} and len(finals) == 2
