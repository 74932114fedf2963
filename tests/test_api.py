"""One source of defaults for the Python API and the CLI; nothing on the command line silently ignored."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import normbench
from normbench import record
from normbench.cli import main
from normbench.config import from_mapping, load_config
from normbench.errors import ConfigError
from normbench.train import train
from tests.helpers import FMNIST_SYSTEM, requires_fmnist

# Fields that differ between two runs of one config by nature: clocks (the record's fields in seconds or per
# second: wall_s, train_time_s, calib_s, test_modes_s, examples_per_sec), when and where the record went.
# (checkpoint: a path inside out_dir)
VOLATILE = {f.name for f in record.FIELDS if f.unit in (record.SECONDS, "samples/s")} | {"created_at", "out_dir",
                                                                                       "checkpoint"}


def comparable(summary: dict) -> dict:
    out = {k: v for k, v in summary.items() if k not in VOLATILE}
    out["config"] = {k: v for k, v in summary["config"].items() if k != "out_dir"}
    return out


def test_python_api_and_cli_give_identical_summaries(tmp_path, capsys):
    overrides = ["data=synthetic", "data.num_train=128", "data.num_test=64", "trainer.max_epochs=1",
                 "trainer.progress_bar=false", "trainer.accelerator=cpu"]
    assert main(["run", *overrides, f"out_dir={tmp_path / 'cli'}"]) == 0
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    notebook = normbench.run([*overrides, f"out_dir={tmp_path / 'nb'}"])
    # a partial mapping names the dataset and gets its YAML defaults (batch 32), as `data=synthetic` does
    partial = train({"data": {"name": "synthetic", "num_train": 128, "num_test": 64},
                     "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"},
                     "out_dir": str(tmp_path / "py")}).summary
    assert cli["batch_size"] == 32 and cli["config"]["data"]["eval_batch_size"] == 256
    assert comparable(notebook) == comparable(cli)
    assert comparable(partial) == comparable(cli)


def test_from_mapping_uses_the_yaml_defaults_of_the_chosen_files():
    assert from_mapping({"data": {"name": "synthetic"}}) == load_config(["data=synthetic"])
    assert from_mapping({}) == load_config([])
    assert from_mapping({"norm": {"name": "GroupNorm", "groups": 2}}) == load_config(["norm=gn", "norm.groups=2"])
    with pytest.raises(ConfigError, match="unknown norm 'foo'; accepted: bn"):
        from_mapping({"norm": {"name": "foo"}})


def test_import_normbench_does_not_load_torch():
    code = "import sys, normbench; assert callable(normbench.run); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("override", ["hydra.run.dir=/tmp/x", "hydra.job.chdir=true", "+hydra.verbose=true",
                                      "hydra/job_logging=disabled"])
def test_hydra_keys_are_refused_not_ignored(override, tmp_path, capsys):
    code = main(["run", override, f"out_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: override '{override}': hydra.* settings are not used")
    assert "accepted instead: out_dir=DIR" in err[0]
    assert not (tmp_path / "run").exists()


def test_interpolations_are_resolved_before_type_checks(monkeypatch):
    monkeypatch.delenv("NB_TEST_LR", raising=False)
    assert load_config(["optim.lr=${oc.env:NB_TEST_LR,0.5}"]).optim.lr == 0.5
    monkeypatch.setenv("NB_TEST_LR", "0.25")
    assert load_config(["optim.lr=${oc.env:NB_TEST_LR,0.5}"]).optim.lr == 0.25
    monkeypatch.setenv("NB_TEST_EPOCHS", "3")
    cfg = load_config(["trainer.max_epochs=${oc.env:NB_TEST_EPOCHS}", "seed=7", "out_dir=runs/s${seed}"])
    assert cfg.trainer.max_epochs == 3 and cfg.out_dir == "runs/s7"
    monkeypatch.setenv("NB_TEST_LR", "fast")
    with pytest.raises(ConfigError, match="optim.lr must be a number, got 'fast'"):
        load_config(["optim.lr=${oc.env:NB_TEST_LR}"])


@requires_fmnist
def test_home_relative_data_root(tmp_path, monkeypatch):
    from normbench.data import load_data

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "fm").mkdir()
    for f in FMNIST_SYSTEM.glob("*-ubyte.gz"):
        (tmp_path / "fm" / f.name).symlink_to(f)
    cfg = load_config(["data.root=~/fm", "data.train_subset=64", "data.test_subset=32"])
    assert cfg.data.root == "~/fm"
    data = load_data("fashion_mnist", cfg.data.root, train_subset=64, test_subset=32)
    assert data.source == str(tmp_path / "fm") and len(data.train_x) == 64
