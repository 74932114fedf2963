"""Sweep files: validation (one clear line, exit code 2, before anything runs), composition, shipped files."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from normbench import norms
from normbench.cli import main
from normbench.config import group_choices, load_config
from normbench.errors import ConfigError
from normbench.sweep import config_id, load_spec, make_plan, point_key
from normbench.sweep.plan import format_value
from normbench.sweep.spec import SPEC_KEYS, parse_spec, split_args
from tests.sweep_support import TINY_BASE, TINY_GRID, SweepHome


@pytest.fixture
def home(tmp_path, monkeypatch) -> SweepHome:
    return SweepHome.create(tmp_path, monkeypatch)


GRID = {"grid": {"norm": ["bn", "gn"]}, "seeds": [0, 1]}
SEARCH = {"sampler": "tpe", "n_configs": 3, "space": {"optim.lr": {"type": "float", "low": 0.1, "high": 1.0}}}


@pytest.mark.parametrize("raw, message", [
    ({"gird": {}}, r"unknown key 'gird'; accepted: description, base, grid"),
    ({"grid": {"data.batch_size": []}}, r"grid 'data.batch_size' has an empty list of values"),
    ({"grid": {"norm": "bn"}}, r"grid 'norm' must be a list of values"),
    ({"grid": {"norm": ["bn", "bn"]}}, r"grid 'norm' lists 'bn' twice"),
    ({"grid": {"seed": [0, 1]}}, r"cannot set 'seed'; list the seeds under `seeds:`"),
    ({"grid": {"data..x": [1]}}, r"is not a config key"),
    ({"grid": {"optim.lr": [0.1, {"a": 1}]}}, r"must be a number, string, boolean or null"),
    ({"grid": {"mb": [{"data.batch_size": 4}, {}]}}, r"grid 'mb': a linked value must set at least one key"),
    ({"grid": {"model": "all", "optim.lr": "all"}}, r"grid 'optim.lr': 'all' only works for a registry group"),
    ({"seeds": []}, r"seeds must be a non-empty list"),
    ({"seeds": [0, 0]}, r"seeds lists a seed twice"),
    ({"sampler": "grid-search"}, r"sampler must be one of grid, tpe, random, qmc; got 'grid-search'"),
    ({**GRID, "space": SEARCH["space"]}, r"sampler grid takes no space"),
    ({"sampler": "tpe", "space": SEARCH["space"]}, r"sampler tpe needs n_configs"),
    ({"sampler": "tpe", "n_configs": 2}, r"sampler tpe needs a space of distributions"),
    ({**SEARCH, "space": {"optim.lr": {"type": "uniform", "low": 0, "high": 1}}},
     r"space 'optim.lr' has type 'uniform'; accepted: float, int, categorical"),
    ({**SEARCH, "space": {"optim.lr": {"type": "float", "low": 1.0, "high": 0.1}}}, r"needs low < high"),
    ({**SEARCH, "space": {"optim.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}},
     r"a log distribution needs low > 0"),
    ({**SEARCH, "space": {"optim.lr": {"type": "float", "high": 1.0}}}, r"needs low as a number, got None"),
    ({**SEARCH, "space": {"optim.lr": {"type": "float", "low": 0.1, "high": 1.0, "lg": True}}},
     r"has unknown field 'lg'; accepted: type, low, high, log, step"),
    ({**SEARCH, "space": {"data.batch_size": {"type": "int", "low": 2.5, "high": 8}}}, r"needs low as an integer"),
    ({**SEARCH, "space": {"data.batch_size": {"type": "categorical", "choices": []}}},
     r"needs a non-empty list of choices"),
    ({**SEARCH, "space": {"optim.lr": {"type": "float", "low": 0.1, "high": 1.0, "step": -1}}},
     r"step must be a positive number"),
    ({**SEARCH, "objective": "test_acc"}, r"objective test_acc would let the test set drive the search"),
    ({**GRID, "pruner": "median", "pruner_options": {"n_startup": 3}},
     r"pruner_options has unknown option 'n_startup' for MedianPruner; accepted: n_startup_trials"),
    ({**GRID, "base": {"norm": "bn"}}, r"'norm' is both fixed in base and swept"),
    ({"grid": {"data.batch_size": [4]}, "sampler": "random", "n_configs": 1, "space": {"data.batch_size": [8]}},
     r"'data.batch_size' is swept twice"),
    ({**GRID, "lr_scaling": {"base": 256}}, r"lr_scaling takes exactly base_batch_size"),
    ({**GRID, "storage": "not a url"}, r"storage 'not a url' is not a database URL"),
    ({**GRID, "n_workers": 0}, r"n_workers must be >= 1, got 0"),
    ({**GRID, "heartbeat_interval": 5, "grace_period": 5}, r"grace_period \(5\) must exceed heartbeat_interval"),
    ({**GRID, "table": ["test_acc"]}, r"table must be a mapping"),
])
def test_bad_sweep_files_fail_with_one_line(raw, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_spec("bad", raw)
    assert str(e.value).startswith("sweep bad: ") and "\n" not in str(e.value)


def test_table_and_report_are_kept_as_given():
    spec = parse_spec("ok", {**GRID, "table": {"columns": ["test_acc", "acc_gap"], "compare": "bn"},
                             "report": {"figure": {"x": "data.batch_size"}}})
    record = spec.to_record()
    assert record["table"] == {"columns": ["test_acc", "acc_gap"], "compare": "bn"}
    assert record["report"] == {"figure": {"x": "data.batch_size"}}
    assert record["grid"] == {"norm": ["bn", "gn"]} and record["seeds"] == [0, 1]


def test_all_expands_to_every_registered_norm():
    spec = parse_spec("ok", {"grid": {"norm": "all"}})
    assert [v[0] for v in spec.grid[0].values] == norms.available()


def test_split_args_separates_sweep_settings():
    name, settings, rest = split_args(["sweep=bn_vs_gn", "sweep.n_workers=4", "sweep.seeds=[0,1]",
                                       "sweep.storage=postgresql://u@h:5432/db", "data=synthetic", "seed=3"])
    assert name == "bn_vs_gn" and rest == ["data=synthetic", "seed=3"]
    assert settings == {"n_workers": 4, "seeds": [0, 1], "storage": "postgresql://u@h:5432/db"}
    with pytest.raises(ConfigError, match=r"only top-level sweep settings"):
        split_args(["sweep=x", "sweep.grid.norm=[bn]"])
    with pytest.raises(ConfigError, match=r"sweep settings \(sweep.n_workers\) need sweep=NAME"):
        split_args(["sweep.n_workers=2"])


def test_unknown_sweep_lists_the_shipped_ones():
    accepted = ", ".join(group_choices("sweep"))
    with pytest.raises(ConfigError, match=rf"unknown sweep 'bn_vs_ln'; accepted: {accepted}$"):
        load_spec("bn_vs_ln")
    with pytest.raises(ConfigError, match=r"unknown sweep 'nope'; accepted: accumulation, bn_vs_gn"):
        load_config(["sweep=nope"])
    with pytest.raises(ConfigError, match=r"sweep=bn_vs_gn is run by `python -m normbench run sweep=bn_vs_gn`"):
        load_config(["sweep=bn_vs_gn"])


def test_sweep_settings_override_the_file(home):
    home.write("tiny", TINY_GRID)
    spec = load_spec("tiny", {"n_workers": 3, "seeds": [5], "pruner": "median"})
    assert (spec.n_workers, spec.seeds, spec.pruner) == (3, [5], "median")
    with pytest.raises(ConfigError, match=r"unknown key 'sweep.n_worker'; accepted: sweep.description"):
        load_spec("tiny", {"n_worker": 3})


BAD_FILES = {
    "unknown_key": (TINY_GRID + "objectve: val_acc\n", r"error: sweep bad: unknown key 'objectve'; accepted: "),
    "empty_choices": (TINY_BASE + "grid:\n  norm: []\n", r"error: sweep bad: grid 'norm' has an empty list of values"),
    "bad_distribution": (TINY_BASE + "sampler: tpe\nn_configs: 2\nspace:\n  optim.lr: {type: float, low: 1, high: 0}\n",
                         r"error: sweep bad: space 'optim.lr' needs low < high, got low=1, high=0"),
    "unknown_config_key": (TINY_BASE + "grid:\n  norm.momentun: [0.1]\n",
                           r"error: sweep bad \(norm.momentun=0.1 seed=0\): unknown key 'norm.momentun' for norm=bn; "
                           r"accepted: name, momentum, keras_momentum, eps"),
    "bad_value": (TINY_BASE + "grid:\n  norm.momentum: [0.1, 2.0]\n",
                  r"error: sweep bad \(norm.momentum=2.0 seed=0\): norm 'bn': momentum must be in \[0, 1\]"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_cli_rejects_bad_sweep_before_running(home, capsys, case):
    text, message = BAD_FILES[case]
    home.write("bad", text)
    code = main(["run", *home.args("bad")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert re.match(message, err), err
    assert not home.results.exists()  # nothing ran, no study was created


def test_cli_subprocess_exit_code_2(home):
    home.write("bad", BAD_FILES["empty_choices"][0])
    proc = home.popen(*home.args("bad"))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert out.strip().splitlines()[-1].startswith("error: sweep bad: grid 'norm' has an empty list of values")


def test_overriding_a_swept_key_or_out_dir_is_refused(home):
    home.write("tiny", TINY_GRID)
    spec = load_spec("tiny")
    with pytest.raises(ConfigError, match=r"'data.batch_size' is swept by sweep tiny; remove the override"):
        make_plan(spec, ["data.batch_size=8"])
    with pytest.raises(ConfigError, match=r"'norm' is swept by sweep tiny"):
        make_plan(spec, ["norm=ln"])
    with pytest.raises(ConfigError, match=r"out_dir is set per trial"):
        make_plan(spec, ["out_dir=/tmp/x"])


def test_objective_needs_a_validation_split(home):
    home.write("tiny", TINY_GRID)
    with pytest.raises(ConfigError, match=r"objective val_acc needs a validation split; set data.val_fraction > 0"):
        make_plan(load_spec("tiny"), ["data.val_fraction=0"])
    with pytest.raises(ConfigError, match=r"pruner median reports the objective every epoch; .* got test_acc"):
        make_plan(load_spec("tiny", {"objective": "test_acc", "pruner": "median"}), [])


@pytest.mark.parametrize("value", [None, True, False, 0, 16, -3, 0.1, 1e-05, 1.5e300, "gn", "/tmp/a b/c", "it's",
                                   "true", "null", "1", "x=y", "sqlite:////tmp/x.db", [1, None, "a b"], [0.5, [2]]])
def test_override_values_round_trip_through_hydra(value):
    (ov,) = OverridesParser.create().parse_overrides([f"key={format_value(value)}"])
    parsed = ov.value()
    assert (OmegaConf.to_container(parsed) if OmegaConf.is_config(parsed) else parsed) == value


def test_trial_config_equals_the_command_line_config(home, tmp_path):
    home.write("tiny", TINY_GRID.replace("grid:\n", "grid:\n  norm.eps: [1.0e-3]\n").replace(
        "norm: [bn, gn]", "optim.momentum: [0.9]"))
    plan = make_plan(load_spec("tiny"), ["trainer.max_epochs=2"])
    params = {"norm.eps": 1e-3, "optim.momentum": 0.9, "data.batch_size": 16, "seed": 3}
    cfg, overrides = plan.composer.compose(params, tmp_path / "t")
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(load_config(overrides))
    assert (cfg.norm.eps, cfg.optim.momentum, cfg.data.batch_size, cfg.seed) == (1e-3, 0.9, 16, 3)
    assert cfg.trainer.max_epochs == 2 and cfg.data.name == "synthetic"


def test_lr_scaling_follows_the_effective_batch(home, tmp_path):
    home.write("tiny", TINY_GRID + "lr_scaling: {base_batch_size: 256}\n")
    plan = make_plan(load_spec("tiny"), ["optim.lr=0.5", "trainer.accumulate_grad_batches=2"])
    cfg, overrides = plan.composer.compose({"norm": "bn", "data.batch_size": 32, "seed": 0}, tmp_path / "t")
    assert cfg.optim.lr == pytest.approx(0.5 * 32 * 2 / 256)
    assert overrides[-1] == f"optim.lr={cfg.optim.lr!r}"  # the command reproduces the scaled rate
    assert load_config(overrides).optim.lr == cfg.optim.lr


def test_config_id_groups_seeds_and_point_key_separates_them():
    a, b = {"norm": "bn", "data.batch_size": 2, "seed": 0}, {"data.batch_size": 2, "norm": "bn", "seed": 1}
    assert config_id(a) == config_id(b) and point_key(a) != point_key(b)
    assert config_id(a) != config_id({**a, "norm": "gn"})
    assert config_id(a) == "36f42e1817c1"  # stable across runs, machines and key order


SHIPPED = {  # sweep -> (trials when every point runs, configurations)
    "bn_vs_gn": (2 * 7 * 3, 2 * 7),
    "norms_all": (len(norms.available()) * 2 * 3, len(norms.available()) * 2),
    "momentum": (7 * 2 * 3, 7 * 2),
    "accumulation": (4 * 2 * 3, 4 * 2),
    "tpe_bn": (40 * 3, None),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sweeps_compose_every_point(name):
    plan = make_plan(load_spec(name), [])  # composes every grid combination and every distribution bound
    total, configs = SHIPPED[name]
    assert plan.total == total
    if configs is not None:
        assert len({config_id(p) for p in plan.replicas()}) == configs
    assert plan.base_cfg.data.val_fraction > 0 and plan.spec.objective == "val_acc"


def test_shipped_sweeps_are_what_the_issue_asks():
    mom = make_plan(load_spec("momentum"), [])
    assert [c["norm.momentum"] for c in mom.combos][::2] == [0.001, 0.01, 0.03, 0.1, 0.3, 0.9, None]
    acc = make_plan(load_spec("accumulation"), [])
    pairs = {(c["data.batch_size"], c["trainer.accumulate_grad_batches"]) for c in acc.combos}
    assert pairs == {(256, 1), (64, 4), (16, 16), (4, 64)}
    tpe = load_spec("tpe_bn")
    assert (tpe.sampler, tpe.n_configs, tpe.pruner) == ("tpe", 40, "median")
    assert {s.key for s in tpe.space} == {"optim.lr", "norm.momentum", "data.batch_size",
                                          "trainer.accumulate_grad_batches"}
    cfg, overrides = make_plan(load_spec("bn_vs_gn"), []).composer.compose(
        {"norm": "gn", "data.batch_size": 2, "seed": 1}, "/tmp/x")
    assert cfg.optim.lr == pytest.approx(1.0 * 2 / 256)  # the GN paper's linear scaling rule
    assert shlex.join(overrides).count("norm=gn") == 1


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_table_and_report_sections_are_accepted_by_the_report_commands(name):
    from normbench.report.figures import REPORT_OPTIONS
    from normbench.report.study import parse_report_args
    from normbench.report.tables import TABLE_OPTIONS

    table = parse_report_args([f"sweep={name}"], "table", "table", TABLE_OPTIONS)
    assert table.options["columns"] == load_spec(name).table["columns"]
    parse_report_args([f"sweep={name}"], "plot", "report", REPORT_OPTIONS)


def test_sweep_settings_are_declared_once_in_the_schema():
    """A sweep file's plain settings come from one schema (normbench.schema): its defaults are the spec's, its
    type errors are the run config's."""
    from normbench import schema
    from normbench.sweep.spec import SETTING_KEYS, SweepSettings

    spec = parse_spec("s", {"grid": {"norm": ["bn"]}})
    for key, default in schema.defaults(SweepSettings).items():
        assert getattr(spec, key) == default, key
    assert set(SETTING_KEYS) < set(SPEC_KEYS)
    with pytest.raises(ConfigError, match=r"sweep s: max_trials must be an integer or null, got 'many'"):
        parse_spec("s", {"grid": {"norm": ["bn"]}, "max_trials": "many"})
    assert parse_spec("s", {"grid": {"norm": ["bn"]}, "pruner": None}).pruner == "none"
