"""`logger=wandb` in offline mode: a real tiny training run, read back from the offline run file.

No mocks: wandb runs offline under tmp_path, and the records are read with `wandb leet inspect --json`
(wandb >= 0.31), which prints each record of the run's .wandb transaction log as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from normbench.files import write_json_atomic
from normbench.train import train


def leet_records(run_file: Path) -> list[dict]:
    exe = shutil.which("wandb")
    cmd = [exe] if exe else [sys.executable, "-m", "wandb"]
    proc = subprocess.run([*cmd, "leet", "inspect", "--json", str(run_file)], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0 and "No such command" in proc.stderr:
        pytest.skip("this wandb has no `leet inspect` to read offline run files")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def offline_run_file(out_dir: Path) -> Path:
    """The one offline run a run wrote: in its own folder, `<out_dir>/wandb/offline-run-*`."""
    (path,) = (Path(out_dir) / "wandb").glob("offline-run-*/run-*.wandb")
    return path


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """No key, no mode: normbench must choose offline itself. Nothing is written outside tmp_path."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_RUN_GROUP", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    return tmp_path


class WriteCalibration(L.Callback):
    """Writes a calibration.json in the calibration engineer's format, as their callback does."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.doc = {"epochs": []}

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        layers = [{"layer": f"net.norm{i}", "channels": 6 * i, "mean_rel_err": 0.1 * i + epoch,
                   "var_log_ratio": -0.5 * i, "kl": 0.01 * i * epoch} for i in (1, 2)]
        self.doc["epochs"].append({"epoch": epoch, "layers": layers, "aggregate": {"kl": 0.0}})
        write_json_atomic(self.out_dir / "calibration.json", self.doc)


def test_offline_run_logs_config_epochs_summary_and_calibration_table(tiny_cfg, wandb_env, capfd, monkeypatch):
    results = wandb_env / "results"
    monkeypatch.chdir(wandb_env)
    cfg = tiny_cfg("logger=wandb", f"results_dir={results}", "logger.group=bn_vs_gn", "trainer.max_epochs=2")
    calib = WriteCalibration(Path(cfg.out_dir))
    result = train(cfg, callbacks=[calib])
    run_file = offline_run_file(cfg.out_dir)  # in the run's folder, not under results_dir or the cwd
    assert not (results / "wandb").exists() and not (wandb_env / "wandb").exists()
    out, err = capfd.readouterr()
    assert "anonymous" not in out + err  # no deprecation warning from Lightning's anonymous=None
    assert [line for line in (out + err).splitlines() if "wandb" in line.lower()] == \
        [f"W&B: offline run in {run_file.parent}; upload it with `wandb sync {run_file.parent}`"]
    records = leet_records(run_file)
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r)

    run = by_type["run"][0]["run"]
    assert run["project"] == "normbench" and run["run_group"] == "bn_vs_gn" and run["job_type"] == "train"
    assert run["tags"] == ["lenet", "bn", "synthetic"]
    config = run["config"]["update"]
    assert config["norm"]["name"] == "bn" and config["data"]["num_train"] == 256
    assert config["out_dir"] == str(result.out_dir)
    for rec in by_type.get("config", []):  # Lightning's hparams do not nest a second copy under 'config'
        assert "config" not in rec["config"]["update"]

    # Per-epoch metrics: exactly the values in the run's own history.
    epochs = [h["history"]["item"] for h in by_type["history"] if "test_acc" in h["history"]["item"]]
    assert [e["test_acc"] for e in epochs] == [h["test_acc"] for h in result.summary["history"]]
    assert [e["train_loss"] for e in epochs] == [h["train_loss"] for h in result.summary["history"]]
    assert [e["epoch"] for e in epochs] == [h["epoch"] for h in result.summary["history"]] == [1, 2]  # one convention

    # The final summary: merged summary updates hold the run record's scalars.
    summary: dict = {}
    for rec in by_type["summary"]:
        summary.update(rec["summary"]["update"])
    for key in ("test_acc", "acc_gap", "examples_per_sec", "optimizer_steps", "git_sha", "status", "seed"):
        assert summary[key] == result.summary[key], key
    assert summary["versions.torch"] == result.summary["versions"]["torch"]

    # The calibration table: one row per (epoch, layer), as written to calibration.json.
    item = next(h["history"]["item"] for h in by_type["history"] if "calibration/layers._type" in h["history"]["item"])
    assert item["calibration/layers._type"] == "table-file"
    table = json.loads((run_file.parent / "files" / item["calibration/layers.path"]).read_text())
    assert table["columns"] == ["epoch", "layer", "channels", "mean_rel_err", "var_log_ratio", "kl"]
    expected = [[e["epoch"], *(layer[c] for c in table["columns"][1:])] for e in calib.doc["epochs"]
                for layer in e["layers"]]
    assert table["data"] == expected
    assert by_type["exit"][0]["exit"]["exit_code"] == 0


def test_run_end_hook_tolerates_missing_calibration_and_finishes(tmp_path, wandb_env):
    from lightning.pytorch.loggers import WandbLogger

    from normbench.training.wandb import log_run_end

    logger = WandbLogger(project="normbench", save_dir=str(tmp_path), offline=True, settings={"silent": True})
    summary = {"status": "ok", "test_acc": 0.5, "history": [{"epoch": 1}], "config": {"a": 1},
               "versions": {"torch": "x"}, "name": None}
    log_run_end(logger, summary, tmp_path / "no-such-run-dir")
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = leet_records(run_file)
    merged: dict = {}
    for r in records:
        if r["type"] == "summary":
            merged.update(r["summary"]["update"])
        assert r["type"] != "history"  # nothing logged per step: no calibration table
    assert merged["test_acc"] == 0.5 and merged["versions.torch"] == "x"
    assert "history" not in merged and "config" not in merged
    assert [r for r in records if r["type"] == "exit"]


class Boom(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        raise RuntimeError("boom")


def test_run_that_raises_is_closed_as_failed(tiny_cfg, wandb_env):
    cfg = tiny_cfg("logger=wandb", f"results_dir={wandb_env / 'results'}")
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, callbacks=[Boom()])
    exits = [r for r in leet_records(offline_run_file(cfg.out_dir)) if r["type"] == "exit"]
    assert exits and exits[0]["exit"]["exit_code"] == 1


def test_online_only_with_a_key_and_no_offline_mode(tmp_path, wandb_env, monkeypatch):
    from normbench.report.dashboard import online
    from normbench.wandb_env import has_api_key

    assert not has_api_key() and not online("auto") and online("online") and not online("offline")
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert has_api_key() and online("auto")  # `wandb login` stores the key in netrc
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not online("auto")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert online("auto")
    with pytest.raises(ValueError, match="report.mode must be auto, online or offline"):
        online("sometimes")
