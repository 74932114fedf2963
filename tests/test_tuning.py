"""Per-arm tuning of a study part (normbench.experiments.tuning): declaration, running, resuming, reporting."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from normbench.cli import main
from normbench.errors import ConfigError
from normbench.experiments.spec import parse_experiment
from tests.helpers import study_root

TRIALS = 3
TUNED_STUDY = f"""\
title: A tiny tuned study
question: Do bn and gn differ on tiny synthetic data, each at the learning rate its validation split prefers?
protocol: Synthetic data, one epoch; the lr tuned per norm on a quarter of the training set.
declared: "2026-12-03"
parts:
  main:
    description: bn and gn, lr tuned per arm
    base:
      data: synthetic
      data.num_train: 512
      data.num_test: 128
      data.batch_size: 16
      trainer.max_epochs: 1
      trainer.accelerator: cpu
      calib.samples: 64
    grid:
      norm: [bn, gn]
    seeds: 2
    tuning:
      space: {{optim.lr: {{type: float, low: 0.01, high: 3.0, log: true}}}}
      trials: {TRIALS}
      sampler: qmc
      sampler_seed: 0
      seeds: [100]
      objective: val_acc
      val_fraction: 0.25
tables:
  - name: table
    part: main
    caption: Test accuracy at each arm's tuned lr.
    columns: [test_acc, lr]
claims:
  - id: bn_mean
    statement: bn's accuracy is a probability.
    test: {{kind: mean_within, part: main, metric: test_acc, select: {{norm: bn}}, low: -1, high: 2}}
"""


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    return study_root(tmp_path, monkeypatch, "tuned", TUNED_STUDY)


@pytest.fixture
def done(root, capsys) -> Path:
    assert main(["reproduce", "tuned"]) == 0
    capsys.readouterr()
    return root


def _study(**tuning_changes) -> dict:
    raw = yaml.safe_load(TUNED_STUDY)
    tuning = raw["parts"]["main"]["tuning"]
    for k, v in tuning_changes.items():
        if v is None:
            tuning.pop(k, None)
        else:
            tuning[k] = v
    return raw


def _trials(root: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    url = f"sqlite:///{root}/runs/studies/{study}/study.db"
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


# ---------------------------------------------------------------------------------------------- declaration


@pytest.mark.parametrize("changes, message", [
    ({"sampler": "grid"}, r"sampler 'grid' is not accepted; accepted: qmc, tpe, random"),
    ({"objective": "test_acc"}, r"objective 'test_acc' is measured on the test set.*accepted: a validation metric"),
    ({"objective": "test_acc_precise"}, r"measured on the test set"),
    ({"val_fraction": None}, r"needs a validation split carved from the training set; set tuning.val_fraction"),
    ({"val_fraction": 1.5}, r"val_fraction must be a number in \(0, 1\), got 1.5"),
    ({"trials": 0}, r"trials \(configurations per arm, the same for every arm\) must be an integer >= 1, got 0"),
    ({"space": {"optim.momentum": {"type": "float", "low": 0.1, "high": 0.9}}}, r"space must search optim.lr"),
    ({"space": {"optim.lr": {"type": "float", "low": 0.01, "high": 3.0}}}, r"optim.lr must be a float distribution "
                                                                          r"on a log scale"),
    ({"space": {"optim.lr": {"type": "float", "low": 3.0, "high": 0.01, "log": True}}}, r"needs low < high"),
    ({"space": {"optim.lr": {"type": "float", "low": 0.01, "high": 3.0, "log": True}, "norm": ["bn", "gn"]}},
     r"'norm' is both swept by the part's grid and tuned"),
    ({"pruner": "sometimes"}, r"pruner must be one of none, median, successive_halving, hyperband"),
    ({"budget": 3}, r"unknown key 'budget'; accepted: space, trials, sampler"),
])
def test_bad_tuning_blocks_fail_with_one_line(changes, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as e:
        parse_experiment("tuned", _study(**changes), tmp_path / "tuned.yaml")
    text = str(e.value)
    assert text.startswith("study tuned: part 'main': tuning: ") and "\n" not in text


def test_a_bad_tuning_block_stops_reproduce_with_exit_code_2(root):
    raw = _study(objective="test_acc")
    (root / "experiments" / "tuned.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "normbench", "reproduce", "tuned"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "objective 'test_acc' is measured on the test set" in lines[0]
    assert not (root / "runs").exists()  # refused before any work


def test_a_valid_block_is_parsed_with_its_defaults(tmp_path):
    exp = parse_experiment("tuned", _study(sampler=None, objective=None, pruner="successive_halving"),
                           tmp_path / "tuned.yaml")
    tuning = exp.tuning["main"]
    assert tuning.trials == TRIALS and tuning.raw["sampler"] == "qmc" and tuning.objective == "val_acc"
    assert tuning.direction == "maximize" and tuning.raw["pruner"] == "successive_halving"
    # the validation split goes into the part's base: the final runs train on the tuning's training portion
    assert exp.parts["main"].base["data.val_fraction"] == 0.25
    assert exp.trials_planned() == 2 * TRIALS + 2 * 2


# ---------------------------------------------------------------------------------------------- the sampler


def test_qmc_leads_are_the_scrambled_sobol_points_in_order(tmp_path):
    """Lead k of a qmc search is point k of the scrambled Sobol sequence of sampler_seed (not Optuna's counter,
    which every trial advances, nor its random first trial)."""
    from scipy.stats import qmc

    from normbench.sweep.spec import parse_spec
    from normbench.sweep.study import make_sampler

    spec = parse_spec("s", {"space": {"optim.lr": {"type": "float", "low": 0.01, "high": 3.0, "log": True}},
                            "sampler": "qmc", "sampler_seed": 7, "n_configs": 5})
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    got = []
    for k in range(5):
        study.sampler = make_sampler(spec, 7 + k, index=k)
        trial = study.ask()
        got.append(trial.suggest_float("optim.lr", 0.01, 3.0, log=True))
        study.tell(trial, 0.5)
    engine = qmc.Sobol(1, scramble=True, seed=7)
    want = [math.exp(math.log(0.01) + u * (math.log(3.0) - math.log(0.01))) for u in engine.random(8)[:5, 0]]
    assert got == pytest.approx(want, rel=1e-9)


# ---------------------------------------------------------------------------------------------- running


def test_a_tuned_study_runs_end_to_end_and_resumes_without_running_anything(done, capsys):
    from normbench.experiments.spec import load_experiment

    exp = load_experiment("tuned")
    out = done / "results" / "tuned"
    finals = [json.loads(line) for line in (out / "records" / "main.jsonl").read_text().splitlines()]
    tuning_rows = [json.loads(line) for line in (out / "records" / "main-tuning.jsonl").read_text().splitlines()]
    assert len(finals) == 2 * 2  # 2 arms x 2 final seeds
    for norm in ("bn", "gn"):
        study = f"tuned-main-tune-{norm}"
        trials = _trials(done, study)
        # every arm gets the same budget: exactly `trials` configurations, each with every tuning seed
        assert len(trials) == TRIALS and all(t.state.name == "COMPLETE" for t in trials)
        assert {t.user_attrs["params"]["norm"] for t in trials} == {norm}
        assert {t.user_attrs["params"]["seed"] for t in trials} == {100}
        assert sum(r["study"] == study for r in tuning_rows) == TRIALS
        # the best val_acc trial of the Optuna study (ties: the smaller lr), found here independently
        best = min(trials, key=lambda t: (-t.value, t.params["optim.lr"]))
        runs = [r for r in finals if r["params"]["norm"] == norm]
        assert sorted(r["params"]["seed"] for r in runs) == [0, 1]
        for r in runs:
            s = r["summary"]
            assert s["tuned"] == {"optim.lr": best.params["optim.lr"]}
            assert s["lr"] == best.params["optim.lr"] and s["config"]["optim"]["lr"] == best.params["optim.lr"]
            assert s["tuning_trials"] == TRIALS and s["tuning_study"] == study
            assert s["test_acc"] is not None  # evaluated on the test set
            # the validation split stays carved out: the final runs train on the tuning's training portion
            assert s["config"]["data"]["val_fraction"] == 0.25
            assert {t["summary"]["n_train"] for t in tuning_rows} == {s["n_train"]}
    assert exp.tuning["main"].trials == TRIALS
    for name in ("main_tuning.md", "main_tuning.tex", "figures/main_tuning.png", "figures/main_tuning.pdf",
                 "figures/main_tuning.json"):
        assert (out / name).is_file(), name
    readme = (out / "README.md").read_text()
    assert "![main_tuning](figures/main_tuning.png)" in readme and "| norm | chosen lr | at edge" in readme
    data = json.loads((out / "figures" / "main_tuning.json").read_text())
    series = data["panels"][0]["series"]
    assert [s["label"] for s in series] == ["bn", "gn"] and data["panels"][0]["xscale"] == "log10"
    assert all(len(s["x"]) == TRIALS and sum(s["starred"]) == 1 for s in series)
    # reproduce --check regenerates the tuning table and figure from the committed records alone
    assert main(["reproduce", "tuned", "--check"]) == 0
    capsys.readouterr()
    # a resume of the complete study runs nothing and rewrites the same bytes
    before = {n: len(_trials(done, n)) for n in ("tuned-main-tune-bn", "tuned-main-tune-gn", "tuned-main")}
    files = {p: p.read_bytes() for p in (done / "results").rglob("*") if p.is_file()}
    assert main(["reproduce", "tuned"]) == 0
    out = capsys.readouterr().out
    assert "[1/" not in out  # no trial ran
    assert {n: len(_trials(done, n)) for n in before} == before
    assert {p: p.read_bytes() for p in (done / "results").rglob("*") if p.is_file()} == files


def test_a_half_done_tuning_resumes_and_writes_nothing_until_complete(root, capsys):
    assert main(["reproduce", "tuned", "sweep.max_trials=2"]) == 1
    out = capsys.readouterr().out
    assert "part main has per-arm tuning not finished" in out
    assert not (root / "results").exists()
    assert len(_trials(root, "tuned-main-tune-bn")) == 2
    assert main(["reproduce", "tuned"]) == 0
    assert len(_trials(root, "tuned-main-tune-bn")) == TRIALS  # resumed: only the missing configuration ran
    assert len(_trials(root, "tuned-main-tune-gn")) == TRIALS


# ---------------------------------------------------------------------------------------------- reporting


def _rows(values: list[tuple[float, str, float | None]]) -> list[dict]:
    return [{"number": i, "state": state, "params": {"norm": "bn", "optim.lr": lr, "seed": 100},
             "summary": {"val_acc": acc, "wall_s": 2.0, "threads": 1} if acc is not None else None,
             "study": "s-tune-bn"}
            for i, (lr, state, acc) in enumerate(values)]


@pytest.mark.parametrize("values, edge", [
    ([(0.1, "COMPLETE", 0.5), (0.5, "COMPLETE", 0.6), (2.0, "COMPLETE", 0.7)], "high"),
    ([(0.1, "COMPLETE", 0.8), (0.5, "COMPLETE", 0.6), (2.0, "COMPLETE", 0.7)], "low"),
    ([(0.1, "COMPLETE", 0.5), (0.5, "COMPLETE", 0.9), (2.0, "COMPLETE", 0.7)], None),
    # a diverged (failed) configuration beyond the best brackets it: not at the edge
    ([(0.1, "COMPLETE", 0.5), (0.5, "COMPLETE", 0.6), (2.0, "COMPLETE", 0.7), (3.0, "FAIL", None)], None),
])
def test_the_edge_rule(values, edge, tmp_path):
    from normbench.experiments.tuning_report import WIDEN, build_table, summarize

    tuning = parse_experiment("tuned", _study(), tmp_path / "t.yaml").tuning["main"]
    arms = summarize(tuning, {"s-tune-bn": _rows(values)})
    assert arms[0].edges == ({} if edge is None else {"optim.lr": edge})
    assert arms[0].cpu_s == 2.0 * sum(v[2] is not None for v in values)
    cell = build_table("main", tuning, arms).rows[0][2].text
    assert (WIDEN in cell) == (edge is not None)


def test_ties_go_to_the_smaller_value(tmp_path):
    from normbench.experiments.tuning import best_config, config_rows

    tuning = parse_experiment("tuned", _study(), tmp_path / "t.yaml").tuning["main"]
    rows = _rows([(2.0, "COMPLETE", 0.7), (0.3, "COMPLETE", 0.7), (0.1, "COMPLETE", 0.5)])
    assert best_config(config_rows(rows, tuning), tuning)["params"] == {"optim.lr": 0.3}


def test_with_several_tuning_seeds_a_configuration_counts_only_when_every_seed_completed(tmp_path):
    from normbench.experiments.tuning import best_config, config_rows

    tuning = parse_experiment("tuned", _study(seeds=[100, 101]), tmp_path / "t.yaml").tuning["main"]
    rows = [{"number": i, "state": state, "params": {"norm": "bn", "optim.lr": lr, "seed": seed},
             "summary": {"val_acc": acc} if acc is not None else None}
            for i, (lr, seed, state, acc) in enumerate([(0.1, 100, "COMPLETE", 0.6), (0.1, 101, "COMPLETE", 0.8),
                                                        (1.0, 100, "COMPLETE", 0.9), (1.0, 101, "FAIL", None),
                                                        (0.3, 100, "COMPLETE", 0.65), (0.3, 101, "COMPLETE", 0.7)])]
    configs = config_rows(rows, tuning)
    assert [c["value"] for c in configs] == [pytest.approx(0.7), None, pytest.approx(0.675)]
    assert best_config(configs, tuning)["params"] == {"optim.lr": 0.1}  # the mean over seeds, never one seed


def test_the_final_grid_keeps_the_tuned_lr_unscaled_under_lr_scaling():
    """A tuned lr is the rate at lr_scaling's base batch, like a searched one: the final runs scale it once
    (a swept optim.lr used to be stored already scaled, then scaled again by each trial)."""
    from normbench.experiments.tuning import final_spec
    from normbench.sweep.plan import make_plan
    from normbench.sweep.spec import parse_spec

    spec = parse_spec("s", {"base": {"data": "synthetic", "data.batch_size": 64, "data.val_fraction": 0.25},
                            "grid": {"norm": ["bn", "gn"]}, "lr_scaling": {"base_batch_size": 256}})
    plan = make_plan(final_spec(spec, [{"norm": "bn"}, {"norm": "gn"}], [{"optim.lr": 0.4}, {"optim.lr": 2.0}]), [])
    assert [c["optim.lr"] for c in plan.combos] == [0.4, 2.0]
    cfg, _ = plan.composer.compose(plan.replicas()[1])
    assert cfg.optim.lr == pytest.approx(2.0 * 64 / 256)


def test_a_grid_over_optim_lr_under_lr_scaling_is_scaled_once():
    from normbench.sweep.plan import make_plan
    from normbench.sweep.spec import parse_spec

    spec = parse_spec("s", {"base": {"data": "synthetic", "data.batch_size": 64, "data.val_fraction": 0.25},
                            "grid": {"optim.lr": [0.4, 2.0]},
                            "lr_scaling": {"base_batch_size": 256}})
    plan = make_plan(spec, [])
    assert [c["optim.lr"] for c in plan.combos] == [0.4, 2.0]  # the declared rates, as the trials' params
    assert [plan.composer.compose(p)[0].optim.lr for p in plan.replicas()] == pytest.approx([0.1, 0.5])
