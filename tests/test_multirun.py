"""`run -m` (Hydra's multirun) as a grid study, and study names: sweep.study_name and the dataset suffix."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.trial import TrialState

from normbench.cli import main
from normbench.errors import ConfigError
from normbench.sweep.multirun import multirun_spec
from normbench.sweep.runner import prepare
from normbench.sweep.study import SweepStudy
from tests.sweep_support import TINY_BASE, TINY_GRID, SweepHome

# One-epoch synthetic runs on 96 training images (the command line's own settings: no sweep file).
TINY_RUN = ["data=synthetic", "data.num_train=96", "data.num_test=32", "trainer.max_epochs=1",
            "trainer.accelerator=cpu"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> SweepHome:
    return SweepHome.create(tmp_path, monkeypatch)


def study_trials(home: SweepHome, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=home.storage(name)).get_trials()


def test_multirun_is_a_grid_study_with_exactly_its_cells_and_a_rerun_runs_nothing(home, capsys):
    args = ["norm=bn,gn", "data.batch_size=16,32", *TINY_RUN, f"results_dir={home.results}"]
    assert main(["run", "-m", *args]) == 0
    out = capsys.readouterr().out
    name = re.search(r"^sweep (multirun-\S+): grid", out, re.M).group(1)
    assert name == multirun_spec(args)[0].study and name.startswith("multirun-data.batch_size-norm-")

    trials = study_trials(home, name)
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    cells = sorted((t.params["norm"], t.params["data.batch_size"], t.user_attrs["seed"]) for t in trials)
    assert cells == [("bn", 16, 0), ("bn", 32, 0), ("gn", 16, 0), ("gn", 32, 0)]
    assert (home.results / name / "trials.csv").is_file()
    assert f"tables: python -m normbench table sweep={name} results_dir={home.results}" in out

    # The same command (overrides in another order, --multirun, more workers) is the same study: nothing runs.
    again = ["--multirun", *reversed(args), "sweep.n_workers=2"]
    assert main(["run", *again]) == 0
    out = capsys.readouterr().out
    assert f"sweep {name}: 4/4 trials done" in out and "#" not in out
    assert [(t.number, t.datetime_complete) for t in study_trials(home, name)] == \
        [(t.number, t.datetime_complete) for t in trials]

    # The report commands read it by name.
    assert main(["table", f"sweep={name}", f"results_dir={home.results}"]) == 0
    assert (home.results / name / "table.md").read_text().count("| bn ") + \
        (home.results / name / "table.md").read_text().count("| gn ") == 4


def test_multirun_seeds_ranges_and_settings_make_the_plan(home):
    plan, url = prepare(["norm=bn,ln", "seed=range(0,3)", "optim.lr=0.5", *TINY_RUN, "sweep.max_trials=2",
                         f"results_dir={home.results}"], multirun=True)
    spec = plan.spec
    assert spec.seeds == [0, 1, 2] and plan.total == 6 and spec.max_trials == 2
    assert [d.label for d in spec.grid] == ["norm"] and plan.base_cfg.optim.lr == 0.5
    assert spec.objective == "test_acc" and url.endswith(f"/{spec.study}/study.db")
    # another base setting is another study; an output setting (results_dir, logger) is not
    other = multirun_spec(["norm=bn,ln", "seed=range(0,3)", "optim.lr=0.25", *TINY_RUN])[0]
    same = multirun_spec(["norm=bn,ln", "seed=range(0,3)", "optim.lr=0.5", *TINY_RUN, "logger=csv",
                          "results_dir=/elsewhere"])[0]
    assert other.study != spec.study and same.study == spec.study


@pytest.mark.parametrize(("args", "message"), [
    (["sweep=bn_vs_gn"], "a sweep file runs without -m"),
    (["norm=bn,gn", "norm=ln"], "'norm' is swept by sweep multirun-norm-"),
    (["norm=bn,gn", "norm=bn,ln"], "'norm' is given twice"),
    (["optim.lr=interval(0.1,1)"], "interval(...) needs a search"),
    (["sweep.grid={a: [1]}"], "unknown key 'sweep.grid' for run -m"),
    (["norm=bn,nosuch"], "unknown norm 'nosuch'"),
])
def test_bad_multirun_is_one_line_before_any_work(home, args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare([*args, *TINY_RUN, f"results_dir={home.results}"], multirun=True)
    assert not home.results.exists()


def test_a_smoke_run_on_another_dataset_gets_its_own_study(home):
    # The sweep file trains on Fashion-MNIST; the smoke run of its README example swaps in synthetic data.
    home.write("fm", TINY_GRID.replace("data: synthetic", "data: fashion_mnist")
               .replace("  data.num_train: 128\n  data.num_test: 64\n", ""))
    smoke = ["data=synthetic", "data.num_train=128", "data.num_test=64", "sweep.max_trials=1"]
    assert main(["run", *home.args("fm", *smoke)]) == 0
    assert [t.state for t in study_trials(home, "fm-synthetic")] == [TrialState.COMPLETE] + [TrialState.WAITING] * 7

    # The real sweep is untouched by it: a study of its own, opened without a refusal (nothing trains here).
    plan, url = prepare(home.args("fm"))
    assert plan.spec.study == "fm" and url == home.storage("fm")
    SweepStudy(plan, url).close()
    assert len(study_trials(home, "fm")) == 8 and not (home.results / "fm" / "trials").exists()


def test_study_name_keeps_two_studies_of_one_file_apart_and_a_refusal_names_the_dataset(home):
    home.write("tiny", TINY_GRID)
    assert main(["run", *home.args("tiny", "sweep.study_name=one", "sweep.max_trials=1")]) == 0
    assert main(["run", *home.args("tiny", "sweep.study_name=two", "trainer.max_epochs=2", "sweep.max_trials=1")]) == 0
    epochs = {name: [t.user_attrs.get("metric.epochs") for t in study_trials(home, name)
                     if t.state == TrialState.COMPLETE] for name in ("one", "two")}
    assert epochs == {"one": [1.0], "two": [2.0]}
    assert main(["table", "sweep=tiny", "sweep.study_name=two", f"results_dir={home.results}"]) == 0
    assert (home.results / "two" / "table.md").is_file() and not (home.results / "tiny").exists()

    # A resume of study `one` on another dataset names the change of dataset, not the synthetic-only keys.
    home.write("tiny2", TINY_BASE + "  norm: bn\n  data.batch_size: 16\n")
    assert main(["run", *home.args("tiny2", "sweep.study_name=x")]) == 0
    plan_args = home.args("tiny2", "sweep.study_name=x", "data=fashion_mnist")
    home.write("tiny2", TINY_BASE.replace("  data: synthetic\n  data.num_train: 128\n  data.num_test: 64\n", "")
               + "  norm: bn\n  data.batch_size: 16\n")
    plan, url = prepare(plan_args)
    with pytest.raises(ConfigError) as err:
        SweepStudy(plan, url)
    msg = str(err.value)
    assert "(data=synthetic -> data=fashion_mnist (and " in msg and "num_train" not in msg
    assert "sweep.study_name=NAME" in msg
