"""The d2l reference recipe on the real Fashion-MNIST (slow tier: `pytest -m slow`, a few minutes on CPU)."""

import json

import pytest

from tests.helpers import requires_fmnist, run_cli

pytestmark = [pytest.mark.slow, requires_fmnist]


def test_default_run_reaches_d2l_accuracy(tmp_path):
    out_dir = tmp_path / "d2l"
    proc = run_cli("run", f"out_dir={out_dir}", "trainer.accelerator=cpu", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads((out_dir / "summary.json").read_text())
    assert s["config"]["model"]["name"] == "lenet" and s["config"]["data"]["batch_size"] == 256
    assert s["epochs"] == 10 and s["n_train"] == 60000 and s["n_test"] == 10000
    assert s["test_acc"] >= 0.85, s["history"]
    assert s["train_acc_running"] >= 0.88
