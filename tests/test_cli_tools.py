"""The command line fits the tools researchers know: --version, --cfg job, Hydra's +group=, --help's config
groups, one progress line per epoch when piped, and the licence the package declares."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from normbench.config import load_config
from tests.helpers import TINY, run_cli

REPO = Path(__file__).resolve().parents[1]


def test_version_names_normbench_and_its_main_dependencies():
    from normbench.version import __version__

    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith(f"normbench {__version__} (torch ")
    assert "lightning " in r.stdout and "optuna " in r.stdout


def test_cfg_job_prints_the_composed_config_and_trains_nothing(tmp_path):
    r = run_cli("run", "--cfg", "job", "data=synthetic", "norm=gn", "data.batch_size=16",
                f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["norm"]["name"] == "gn" and printed["data"]["batch_size"] == 16
    composed = load_config(["data=synthetic", "norm=gn", "data.batch_size=16", f"out_dir={tmp_path / 'run'}"])
    assert printed == OmegaConf.to_container(composed, resolve=True)
    assert not (tmp_path / "run").exists()
    again = run_cli("run", "--cfg=job", "data=synthetic", "norm=gn", "data.batch_size=16",
                    f"out_dir={tmp_path / 'run'}")
    assert again.stdout == r.stdout


def test_cfg_with_an_unsupported_value_or_a_bad_override_is_one_error_line():
    for args, message in ((["--cfg", "hydra"], "--cfg hydra is not supported; accepted: job, all"),
                          (["--cfg", "job", "norm=zz"], "unknown norm 'zz'; accepted:"),
                          (["--cfg"], "--cfg needs a value; accepted: job, all")):
        r = run_cli("run", *args)
        assert r.returncode == 2, args
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_plus_group_is_the_group_choice():
    assert load_config(["+experiment=d2l_lenet_bn"]) == load_config(["experiment=d2l_lenet_bn"])
    assert load_config(["++norm=gn"]) == load_config(["norm=gn"])


def test_help_lists_the_config_groups_and_their_choices():
    r = run_cli("--help")
    assert r.returncode == 0
    lines = {line.split()[0]: line for line in r.stdout.split("config groups (group=choice):")[1].splitlines()
             if line.strip() and not line.startswith("options")}
    assert {"model", "norm", "data", "sweep", "experiment"} <= set(lines)
    assert "gn" in lines["norm"] and "synthetic" in lines["data"] and "bn_vs_gn" in lines["sweep"]


def test_a_piped_run_prints_one_progress_line_per_epoch(tmp_path):
    r = run_cli("run", *TINY, "trainer.max_epochs=2", "trainer.progress_bar=true", f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\r" not in r.stdout
    epochs = [line for line in r.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all("train_acc" in line and "test_acc" in line for line in epochs)
    assert not any(line.startswith("epoch ") for line in r.stdout.splitlines())  # stdout: the result table


def test_the_licence_file_matches_the_declared_licence():
    declared = re.search(r'^license = \{ text = "([^"]+)" \}$', (REPO / "pyproject.toml").read_text(), re.M)
    text = (REPO / "LICENSE").read_text()
    assert declared is not None and declared.group(1) == "Apache-2.0"
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text


def test_metrics_csv_has_one_row_per_epoch_then_the_end_of_training_row(tmp_path):
    import csv

    r = run_cli("run", *TINY, "trainer.max_epochs=3", "logger=csv", f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    per_epoch = [row for row in rows if row["epoch"] != ""]
    assert [float(row["epoch"]) for row in per_epoch] == [1, 2, 3]  # one row each, numbered as in summary.json
    assert all(row["test_acc"] and row["train_loss"] for row in per_epoch)
    final = [row for row in rows if row["epoch"] == ""]
    assert len(final) == 1 and final[0]["test_acc_batch"]  # the once-per-run measurements after training
