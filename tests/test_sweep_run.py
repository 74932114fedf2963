"""Running sweeps in this process: exactly once, resume, trial records, failures, pruning, search."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from normbench.cli import main
from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.files import read_json
from normbench.results import stored_summary
from normbench.sweep import final_trials, run_sweep
from normbench.sweep.pruning import PruningCallback
from normbench.sweep.runner import prepare
from normbench.sweep.study import LOST_WORKER_REASON, SweepStudy
from normbench.sweep.worker import DROPPED_REASON, Worker
from normbench.train import train
from tests.helpers import CrashAtEpoch
from tests.sweep_support import ONE_POINT, TINY_BASE, TINY_GRID, SweepHome, point_counts, tiny_points


@pytest.fixture
def home(tmp_path, monkeypatch) -> SweepHome:
    return SweepHome.create(tmp_path, monkeypatch)


def test_grid_runs_every_point_once_and_a_rerun_runs_nothing(home, capsys):
    home.write("tiny", TINY_GRID)
    assert run_sweep(home.args("tiny")) == 0
    out = capsys.readouterr().out
    assert "[8/8]" in out and "sweep tiny: 8/8 trials done (0 failed, 0 pruned" in out

    trials = home.trials("tiny")
    assert len(trials) == 8 and {t.state for t in trials} == {TrialState.COMPLETE}
    counts = point_counts(trials)
    assert set(counts) == tiny_points() and set(counts.values()) == {1}

    finished = {t.number: t.datetime_complete for t in trials}
    assert run_sweep(home.args("tiny")) == 0
    out = capsys.readouterr().out
    assert "sweep tiny: 8/8 trials done" in out and "#" not in out  # no trial line: nothing ran
    again = home.trials("tiny")
    assert {t.number: t.datetime_complete for t in again} == finished


def test_every_trial_carries_the_report_contract(home):
    home.write("tiny", TINY_GRID)
    assert run_sweep(home.args("tiny", "sweep.max_trials=4")) == 0
    trials = home.trials("tiny")
    by_state = {s: [t for t in trials if t.state == s] for s in (TrialState.COMPLETE, TrialState.WAITING)}
    assert len(by_state[TrialState.COMPLETE]) == 4 and len(by_state[TrialState.WAITING]) == 4
    for t in trials:  # any state: params, seed, config_id, run_dir
        params = t.user_attrs["params"]
        assert set(params) == {"norm", "data.batch_size", "seed"} and t.user_attrs["seed"] == params["seed"]
        assert t.user_attrs["run_dir"] == str(home.results / "tiny" / "trials" / str(t.number))
        assert len(t.user_attrs["config_id"]) == 12
    ids = {}
    for t in trials:
        p = t.user_attrs["params"]
        ids.setdefault((p["norm"], p["data.batch_size"]), set()).add(t.user_attrs["config_id"])
    assert all(len(v) == 1 for v in ids.values()) and len({next(iter(v)) for v in ids.values()}) == 4

    for t in by_state[TrialState.COMPLETE]:
        # the whole record, losslessly: no attribute longer than 1024 characters as stored (JSON), the parts
        # together equal summary.json, the headline metrics are numbers of their own
        assert max(len(json.dumps(v)) for v in t.user_attrs.values()) <= 1024
        assert t.user_attrs["summary_parts"] > 1 and "summary" not in t.user_attrs
        summary = stored_summary(t.user_attrs)
        assert summary == read_json(Path(t.user_attrs["run_dir"]) / "summary.json")
        for key in ("val_acc", "test_acc", "train_acc", "acc_gap", "calib_kl", "test_acc_precise", "examples_per_sec"):
            if summary[key] is None:  # e.g. calib_kl of a GN run
                assert f"metric.{key}" not in t.user_attrs
            else:
                assert t.user_attrs[f"metric.{key}"] == summary[key], key
        assert t.value == summary["val_acc"] and t.user_attrs["fail_reason"] is None
        assert summary["seed"] == t.user_attrs["params"]["seed"] == t.user_attrs["seed"]  # a number of its own
        assert summary["batch_size"] == t.user_attrs["params"]["data.batch_size"]
        assert t.params == {k: v for k, v in t.user_attrs["params"].items() if k != "seed"}
        assert sorted(t.intermediate_values) == [1]  # val_acc of every epoch

    study = optuna.load_study(study_name="tiny", storage=home.storage("tiny"))
    assert study.metric_names == ["val_acc"]  # optuna-dashboard names the objective
    assert study.user_attrs["sweep"]["objective"] == "val_acc"
    assert study.user_attrs["base_config"]["data"]["name"] == "synthetic"

    with open(home.results / "tiny" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(done) == 4 and all(r["test_acc"] and r["params.norm"] in ("bn", "gn") for r in done)


def test_a_trial_is_reproduced_by_its_command(home, tmp_path):
    home.write("tiny", TINY_GRID)
    assert run_sweep(home.args("tiny", "sweep.max_trials=1")) == 0
    (trial,) = [t for t in home.trials("tiny") if t.state == TrialState.COMPLETE]
    words = shlex.split(trial.user_attrs["command"])
    assert words[:4] == ["python", "-m", "normbench", "run"]
    overrides = [w for w in words[4:] if not w.startswith("out_dir=")] + [f"out_dir={tmp_path / 'again'}"]
    again = train(load_config(overrides)).summary
    for key in ("val_acc", "test_acc", "train_loss", "optimizer_steps"):
        assert again[key] == stored_summary(trial.user_attrs)[key], key


def test_diverged_trial_fails_with_its_reason_and_the_sweep_goes_on(home):
    home.write("div", TINY_BASE + "  norm: none\n  data.batch_size: 16\ngrid:\n  optim.lr: [0.5, 1.0e38]\n")
    assert run_sweep(home.args("div")) == 0
    by_lr = {t.user_attrs["params"]["optim.lr"]: t for t in home.trials("div")}
    assert by_lr[0.5].state == TrialState.COMPLETE
    failed = by_lr[1e38]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == "diverged: training loss not finite at epoch 1"
    assert stored_summary(failed.user_attrs)["status"] == "diverged"


def test_resuming_with_other_settings_is_refused(home):
    home.write("tiny", TINY_GRID)
    assert run_sweep(home.args("tiny", "sweep.max_trials=1")) == 0
    with pytest.raises(ConfigError, match=r"was run with other settings \(trainer.max_epochs: 1 -> 2\); resume"):
        run_sweep(home.args("tiny", "trainer.max_epochs=2"))
    assert run_sweep(home.args("tiny", "sweep.max_trials=1", "trainer.progress_bar=true")) == 0  # no effect on numbers
    assert sum(t.state == TrialState.COMPLETE for t in home.trials("tiny")) == 2


def test_extending_the_seeds_runs_only_the_new_points(home):
    home.write("tiny", TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]"))
    assert run_sweep(home.args("tiny")) == 0
    first = {t.number for t in home.trials("tiny")}
    assert len(first) == 4
    assert run_sweep(home.args("tiny", "sweep.seeds=[0,1]")) == 0
    trials = home.trials("tiny")
    assert set(point_counts(trials)) == tiny_points() and set(point_counts(trials).values()) == {1}
    assert {t.number for t in trials} - first == {4, 5, 6, 7}


SEARCH = TINY_BASE.replace("trainer.max_epochs: 1", "trainer.max_epochs: 2") + """\
  norm: bn
  data.batch_size: 16
space:
  optim.lr: {type: float, low: 0.05, high: 5.0, log: true}
  norm.momentum: [0.01, 0.1]
seeds: [0, 1]
sampler: tpe
sampler_options: {n_startup_trials: 2}
n_configs: 4
pruner: median
pruner_options: {n_startup_trials: 1, n_warmup_steps: 0}
objective: val_acc
"""


def test_search_runs_every_seed_of_each_kept_configuration(home):
    home.write("search", SEARCH)
    assert run_sweep(home.args("search")) == 0
    trials = home.trials("search")
    leads = [t for t in trials if t.user_attrs.get("lead")]
    assert len(leads) == 4 and all(t.user_attrs["params"]["seed"] == 0 for t in leads)
    for lead in leads:
        siblings = [t for t in trials if t.user_attrs["config_id"] == lead.user_attrs["config_id"] and t is not lead]
        if lead.state == TrialState.COMPLETE:
            (sib,) = siblings
            assert sib.state == TrialState.COMPLETE and sib.user_attrs["params"]["seed"] == 1
            assert sib.params == lead.params and sib.user_attrs["lead"] is False
        else:  # pruned on its first seed: the configuration ends there
            assert lead.state == TrialState.PRUNED and siblings == []
            assert stored_summary(lead.user_attrs)["pruned_at_epoch"] == max(lead.intermediate_values)
    assert set(leads[0].params) == {"optim.lr", "norm.momentum"}
    assert len(trials) == len(leads) + sum(t.state == TrialState.COMPLETE for t in leads)
    # The same search again (same sampler seed) proposes the same configurations.
    assert run_sweep(home.args("search", f"results_dir={home.root / 'again'}")) == 0
    again = optuna.load_study(study_name="search", storage=f"sqlite:///{home.root / 'again' / 'search' / 'study.db'}")
    assert [t.params for t in again.get_trials()] == [t.params for t in trials]


def test_pruning_callback_stops_the_run_and_keeps_its_summary(home, tiny_cfg):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    pruning = PruningCallback(trial, "val_acc")
    summary = train(tiny_cfg("trainer.max_epochs=3", "data.val_fraction=0.25"), callbacks=[pruning]).summary
    assert pruning.pruned_at_epoch == 1 and summary["pruned_at_epoch"] == 1 and summary["epochs"] == 1
    assert study.trials[0].intermediate_values == {1: summary["history"][0]["val_acc"]}


def test_wandb_trials_are_separate_quiet_runs_in_the_study_group_and_the_dashboard_logs_an_artifact(
        home, monkeypatch, capfd):
    from tests.test_wandb_logging import leet_records

    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_SILENT", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_TAGS"):
        monkeypatch.delenv(var, raising=False)
    for var, sub in (("WANDB_CONFIG_DIR", "cfg"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(home.root / "wandb-env" / sub))
    home.write("tiny", TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("[16, 32]", "[16]"))
    assert run_sweep(home.args("tiny", "logger=wandb", "logger.tags=[mine]")) == 0
    out, err = capfd.readouterr()
    trials = home.trials("tiny")
    assert len(trials) == 2 and {t.state for t in trials} == {TrialState.COMPLETE}
    group = optuna.load_study(study_name="tiny", storage=home.storage("tiny")).user_attrs["wandb_group"]
    assert re.fullmatch(r"tiny-[0-9a-f]{6}", group)
    # quiet: no wandb console lines; one line for the whole sweep says where the runs are
    assert not [line for line in (out + err).splitlines() if line.startswith("wandb:")]
    (line,) = [line for line in out.splitlines() if line.startswith("W&B:")]
    assert f"group {group}" in line and f"wandb sync {home.results / 'tiny' / 'trials'}/*/wandb/offline-run-*" in line
    # one W&B run per trial, in the trial's own folder, not one run reused by Lightning's WandbLogger
    for t in trials:
        (run_file,) = (Path(t.user_attrs["run_dir"]) / "wandb").glob("offline-run-*/run-*.wandb")
        run = next(r["run"] for r in leet_records(run_file) if r["type"] == "run")
        assert run["run_group"] == group and run["job_type"] == "sweep-trial"
        assert run["tags"] == ["lenet", t.user_attrs["params"]["norm"], "synthetic", "mine", "tiny"]
        assert stored_summary(t.user_attrs)["config"]["logger"]["group"] == group
    # a resume keeps the study's group
    plan, url = prepare(home.args("tiny", "logger=wandb"))
    SweepStudy(plan, url).close()
    assert plan.base_cfg.logger.group == group

    # The dashboard writes the table and figures and logs them as the study's artifact (offline here).
    assert main(["dashboard", "sweep=tiny", f"results_dir={home.results}"]) == 0
    out = capfd.readouterr().out
    (run_file,) = (home.results / "tiny" / "wandb").glob("offline-run-*/run-*.wandb")
    records = leet_records(run_file)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["run_group"] == group and run["job_type"] == "report" and run["tags"] == ["tiny"]
    (artifact,) = [r["artifact"] for r in records if r["type"] == "artifact"]
    assert artifact["name"] == "tiny-results" and artifact["type"] == "results"
    names = {e["path"] for e in artifact["manifest"]["contents"]}
    figures = {str(p.relative_to(home.results / "tiny")) for p in (home.results / "tiny" / "figures").glob("*")}
    assert names == {"table.md", "table.tex", "dashboard.html", *figures}
    assert f"upload it with `wandb sync {run_file.parent}`" in out
    assert f"wandb sync {home.results / 'tiny' / 'trials'}/*/wandb/offline-run-*" in out


def test_dashboard_without_wandb_runs_does_not_tell_to_sync_them(home, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    home.write("tiny", ONE_POINT)
    assert run_sweep(home.args("tiny")) == 0
    capsys.readouterr()
    assert main(["dashboard", "sweep=tiny", f"results_dir={home.results}", "report.artifact=false"]) == 0
    out = capsys.readouterr().out
    assert "the trials logged no W&B runs" in out and "wandb sync" not in out


@pytest.mark.parametrize("name", ["accumulation", "bn_vs_gn", "momentum", "norms_all", "tpe_bn"])
def test_shipped_sweep_smoke_runs_on_tiny_data(home, name):
    tiny = ["data=synthetic", "data.num_train=400", "data.num_test=64", "trainer.max_epochs=1"]
    assert run_sweep(home.args(name, "sweep.max_trials=1", *tiny)) == 0
    assert not (home.results / name).exists()  # the smoke run on synthetic data keeps the real study's place free
    ran = [t for t in home.trials(f"{name}-synthetic") if t.state != TrialState.WAITING]
    assert len(ran) == 1 and ran[0].state == TrialState.COMPLETE, ran[0].user_attrs.get("fail_reason")
    assert stored_summary(ran[0].user_attrs)["dataset"] == "synthetic"


def _as_if_stale(sweep_study: SweepStudy, trial) -> None:
    """What another worker does when `trial`'s heartbeat looks stale: fail it and queue a copy."""
    sweep_study.storage.set_trial_state_values(sweep_study.trial_id(trial.number), TrialState.FAIL)
    sweep_study.requeue(trial)


def test_result_of_a_trial_requeued_meanwhile_is_dropped(home):
    home.write("tiny", TINY_GRID.replace("seeds: [0, 1]", "seeds: [0]"))
    plan, url = prepare(home.args("tiny"))
    sweep_study = SweepStudy(plan, url)
    try:
        trial, params = sweep_study.claim()
        _as_if_stale(sweep_study, trial)
        outcome = Worker(sweep_study).run_trial(trial, params)
        assert outcome.fail_reason == DROPPED_REASON
        Worker(sweep_study).run()
    finally:
        sweep_study.close()
    trials = home.trials("tiny")
    assert trials[trial.number].user_attrs["fail_reason"] == LOST_WORKER_REASON  # untouched by the late result
    finals = final_trials(trials)
    assert len(finals) == 4 and {t.state for t in finals} == {TrialState.COMPLETE}
    assert len({t.user_attrs["point_key"] for t in finals}) == 4


def test_requeued_trial_resumes_from_the_dead_trials_checkpoint(home):
    home.write("one", ONE_POINT.replace("trainer.max_epochs: 1", "trainer.max_epochs: 2"))
    plan, url = prepare(home.args("one"))
    sweep_study = SweepStudy(plan, url)
    try:
        trial, params = sweep_study.claim()
        dead_dir = sweep_study.trials_dir / str(trial.number)
        cfg, _ = plan.composer.compose(params, dead_dir)
        with pytest.raises(RuntimeError, match="simulated crash"):  # its worker dies in epoch 2
            train(cfg, callbacks=[CrashAtEpoch(2)])
        _as_if_stale(sweep_study, trial)
        Worker(sweep_study).run()
    finally:
        sweep_study.close()
    (retry,) = [t for t in home.trials("one") if t.user_attrs.get("retry_of") == trial.number]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"] == str(dead_dir / "last.ckpt")
    summary = stored_summary(retry.user_attrs)
    assert summary["resumed_from"] == str(dead_dir / "last.ckpt")
    assert summary["resumed_from_step"] == summary["optimizer_steps"] // 2 > 0  # epoch 1 was not run again
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    # the same numbers as the point run uninterrupted
    whole = train(plan.composer.compose(params, home.root / "whole")[0]).summary
    assert summary["history"] == whole["history"] and summary["test_acc"] == whole["test_acc"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_final_trials_leave_out_requeued_originals():
    study = optuna.create_study()
    for _ in range(2):
        study.enqueue_trial({}, user_attrs={"params": {"seed": 0}})
    t0 = study.ask()
    study.tell(t0, state=TrialState.FAIL)
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[0])
    kept = [t.number for t in final_trials(study.get_trials())]
    assert kept == [1, 2] and json.dumps(study.trials[2].system_attrs["retry_history"]) == "[0]"


def test_linked_values_may_set_different_keys(home):
    # bn with and without pooled statistics beside gn, which has no such option: a key a value leaves
    # out is not set for that trial (and is not one of its params).
    home.write("mixed", TINY_BASE + """\
grid:
  setup:
    - {norm: bn, norm.accumulation_aware: false}
    - {norm: bn, norm.accumulation_aware: true}
    - {norm: gn}
seeds: [0]
objective: val_acc
""")
    assert run_sweep(home.args("mixed")) == 0
    trials = home.trials("mixed")
    params = sorted((t.user_attrs["params"] for t in trials), key=lambda p: repr(sorted(p.items())))
    assert params == [{"norm": "bn", "norm.accumulation_aware": False, "seed": 0},
                      {"norm": "bn", "norm.accumulation_aware": True, "seed": 0},
                      {"norm": "gn", "seed": 0}]
    for t in trials:
        cfg = read_json(Path(t.user_attrs["run_dir"]) / "summary.json")["config"]
        assert cfg["norm"]["name"] == t.user_attrs["params"]["norm"]
        assert ("accumulation_aware" in cfg["norm"]) == (cfg["norm"]["name"] == "bn")
