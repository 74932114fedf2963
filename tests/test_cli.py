"""The command line: help, list, and one clear error line with exit code 2 for every bad input."""

import json

import pytest

from normbench.cli import main
from tests.helpers import run_cli

BAD_INPUTS = [
    (["norm=foo"], "unknown norm 'foo'; accepted: bn, bn_scratch"),
    (["model=vgg"], "unknown model 'vgg'; accepted:"),
    (["data=imagenet"], "unknown data 'imagenet'; accepted:"),
    (["norm=gn", "norm.groups=4", "data=synthetic"], "groups=4 does not divide num_channels=6 (layer 'features.norm1'"),
    (["data=synthetic", "data.batch_size=1"], "norm=bn normalizes with batch statistics but each call would see 1"),
    (["norm.momentum=-0.5"], "momentum must be in [0, 1]"),
    (["norm.momentum=1.5"], "momentum must be in [0, 1]"),
    (["data.root=/nonexistent/fmnist"], "Fashion-MNIST not found in data.root=/nonexistent/fmnist; install it with"),
    (["optim.lrate=0.1"], "unknown key 'optim.lrate'; accepted: name, lr, momentum"),
    (["norm.groups=2"], "unknown key 'norm.groups' for norm=bn; accepted: name, momentum, keras_momentum, eps"),
    (["bogus=1"], "unknown key 'bogus'; accepted:"),
    (["seed=abc"], "seed must be an integer, got 'abc'"),
    (["trainer.max_epochs=0"], "trainer.max_epochs must be >= 1, got 0"),
    (["trainer.accelerator=tpu"], "trainer.accelerator must be one of auto, cpu, gpu"),
    (["logger=mlflow"], "unknown logger 'mlflow'; accepted: csv, none, tensorboard, wandb"),
    (["norm.momentum=["], "cannot parse override 'norm.momentum=['"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_before_work(overrides, message, capsys, tmp_path):
    out_dir = tmp_path / "run"
    code = main(["run", *overrides, f"out_dir={out_dir}", "trainer.progress_bar=false"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert not out_dir.exists()  # nothing was started or written


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = run_cli("run", "norm=foo", f"out_dir={tmp_path / 'x'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown norm 'foo'; accepted: bn, bn_scratch")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'; accepted: run, list" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "run" in out and "list" in out


def test_list_shows_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "models: lenet, resnet18" in out
    norms_line = next(line for line in out.splitlines() if line.startswith("norms: "))
    assert {"bn", "bn_scratch", "gn", "ln", "in", "none"} <= set(norms_line[len("norms: "):].split(", "))
    assert "datasets: fashion_mnist, cifar10, synthetic" in out
    assert "experiments: d2l_lenet_bn" in out


def test_run_writes_summary_and_prints_it(tmp_path):
    out_dir = tmp_path / "cli_run"
    proc = run_cli("run", "data=synthetic", "data.num_train=128", "data.num_test=64", "trainer.max_epochs=1",
                   "trainer.progress_bar=false", f"out_dir={out_dir}", "logger=csv")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert "test accuracy" in proc.stdout and f"{summary['test_acc']:.4f}" in proc.stdout
    assert (out_dir / "metrics.csv").exists()  # logger=csv
