"""A trial's numbers depend on its stored record alone: thread count and effective learning rate are part of
it, a resume that would compute differently is refused, and a diverged run is never a result."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import torch
from optuna.trial import TrialState

from normbench.cli import main
from normbench.errors import ConfigError
from normbench.sweep import run_sweep
from normbench.sweep.runner import prepare
from normbench.train import train
from tests.sweep_support import ONE_POINT, REPO, TINY_BASE, SweepHome, summary_of

TWO_SEEDS = ONE_POINT.replace("seeds: [0]", "seeds: [0, 1]")


@pytest.fixture
def home(tmp_path, monkeypatch) -> SweepHome:
    return SweepHome.create(tmp_path, monkeypatch)  # this process: 1 torch thread


# ---------------------------------------------------------------- item 1: the thread count


def test_single_run_sets_and_records_its_thread_count(tiny_cfg):
    torch.set_num_threads(2)
    summary = train(tiny_cfg("trainer.threads=1")).summary
    assert summary["threads"] == 1 and summary["config"]["trainer"]["threads"] == 1
    assert torch.get_num_threads() == 2  # the caller's setting is back
    assert train(tiny_cfg()).summary["threads"] == 2  # null: torch's own count, resolved at the start


def test_stored_command_reproduces_the_trial_in_a_fresh_process(home, tmp_path):
    """The trial ran at 1 thread here; a fresh process would default to 2 (OMP_NUM_THREADS=2)."""
    home.write("one", ONE_POINT)
    assert run_sweep(home.args("one")) == 0
    (trial,) = home.trials("one")
    stored = summary_of(trial)
    assert stored["threads"] == 1 and "trainer.threads=1" in trial.user_attrs["command"]
    words = shlex.split(trial.user_attrs["command"])
    again = tmp_path / "again"
    args = [w for w in words[4:] if not w.startswith("out_dir=")] + [f"out_dir={again}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "normbench", "run", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    fresh = json.loads((again / "summary.json").read_text())
    assert fresh["threads"] == 1
    assert fresh["history"] == stored["history"]  # every metric of every epoch, to the last bit


def test_workers_share_the_cores_and_a_resume_keeps_the_study_thread_count(home):
    home.write("two", TWO_SEEDS)
    plan, _ = prepare(home.args("two", "sweep.n_workers=2"))
    assert plan.base_cfg.trainer.threads == max(1, torch.get_num_threads() // 2)
    assert run_sweep(home.args("two", "sweep.max_trials=1")) == 0  # 1 thread (this process has 1)
    torch.set_num_threads(2)  # another machine, or another sweep.n_workers: this one would choose 2
    assert run_sweep(home.args("two")) == 0
    trials = home.trials("two")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [summary_of(t)["threads"] for t in trials] == [1, 1]
    assert all("trainer.threads=1" in t.user_attrs["command"] for t in trials)
    with pytest.raises(ConfigError, match=r"other settings \(trainer.threads: 1 -> 2\)"):
        run_sweep(home.args("two", "trainer.threads=2"))


# ---------------------------------------------------------------- item 2: learning-rate rules


def test_effective_lr_is_recorded_and_a_resume_must_keep_the_lr_rule(home, capsys):
    home.write("scaled", ONE_POINT + "lr_scaling: {base_batch_size: 64}\n")
    assert run_sweep(home.args("scaled", "optim.lr=0.4")) == 0
    (trial,) = home.trials("scaled")
    assert summary_of(trial)["lr"] == pytest.approx(0.4 * 16 / 64)
    with pytest.raises(ConfigError, match=r"sweep.lr_scaling \{'base_batch_size': 64\}, this run has None"):
        run_sweep(home.args("scaled", "optim.lr=0.4", "sweep.lr_scaling=null"))
    with pytest.raises(ConfigError, match=r"other settings \(optim.lr: 0.4 -> 0.8\)"):
        run_sweep(home.args("scaled", "optim.lr=0.8"))  # the base rate of the rule changes every trial's rate
    capsys.readouterr()
    assert main(["table", "sweep=scaled", f"results_dir={home.results}", "table.columns=[lr]"]) == 0
    table = (home.results / "scaled" / "table.md").read_text()
    assert "effective lr" in table and "0.10000" in table


# ---------------------------------------------------------------- item 3: divergence


def test_a_finite_loss_explosion_is_diverged(tiny_cfg, capsys):
    s = train(tiny_cfg("optim.lr=1e6", "trainer.max_epochs=3")).summary  # BN keeps the loss finite
    assert s["status"] == "diverged" and s["diverged_at_epoch"] == 1 and s["epochs"] == 1
    assert s["diverged_reason"].startswith("training loss ") and "> 10 x the initial" in s["diverged_reason"]
    assert s["history"][0]["train_loss_running"] > 10 * s["initial_loss"]
    ok = train(tiny_cfg("optim.lr=1.0", "trainer.max_epochs=2")).summary
    assert ok["status"] == "ok" and ok["diverged_reason"] is None


def test_diverged_trials_are_shown_as_diverged_and_never_bold(home, capsys):
    home.write("div", TINY_BASE + "  data.batch_size: 16\ngrid:\n  optim.lr: [0.5, 1.0e6]\n")
    assert run_sweep(home.args("div")) == 0
    by_lr = {t.user_attrs["params"]["optim.lr"]: t for t in home.trials("div")}
    assert by_lr[0.5].state == TrialState.COMPLETE
    assert by_lr[1e6].state == TrialState.FAIL
    assert by_lr[1e6].user_attrs["fail_reason"].startswith("diverged: training loss ")
    capsys.readouterr()
    assert main(["table", "sweep=div", f"results_dir={home.results}", "table.columns=[train_loss, test_acc]"]) == 0
    rows = [line for line in (home.results / "div" / "table.md").read_text().splitlines()
            if line.startswith("| 1e+06") or line.startswith("| 0.5")]
    diverged = next(r for r in rows if r.startswith("| 1e+06"))
    assert "diverged: 0" in diverged and "**" not in diverged and diverged.count("–") == 2
