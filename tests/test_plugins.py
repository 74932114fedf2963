"""Norms, models and datasets from outside the package (normbench.plugins): by import path and by entry point.

The plugin is the example package examples/centred_bn (its own pyproject and entry points): imported from its
source folder for the import-path form, and pip-installed into a temporary folder for the entry-point form.
Plugins that are broken on purpose are modules the tests write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from normbench import norms
from normbench.config import load_config
from normbench.errors import ConfigError
from normbench.train import train
from tests.helpers import TINY, run_cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "centred_bn"
CENTRED = "centred_bn.layers:CentredBatchNorm"
MLP = "centred_bn.model:build"
STRIPES = "centred_bn.data:load"


@pytest.fixture
def example_on_path(monkeypatch):
    """The example plugin importable from its source folder (not installed): the import-path form."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """Writes a module `name` with `source` into a folder on sys.path; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """examples/centred_bn pip-installed (its entry points included) into a temporary target folder."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "centred_bn"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # pip builds in place
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, text=True)
    return target


def with_site(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


# --- by import path -------------------------------------------------------------------------------------------


def test_an_import_path_norm_takes_its_signature_as_options(example_on_path):
    cfg = load_config([f"norm={CENTRED}", "norm.momentum=0.2", *TINY])
    assert cfg.norm == {"name": CENTRED, "momentum": 0.2, "affine": True}
    entry = norms.get(CENTRED)
    assert entry.origin == "import path" and entry.meta["batch_stats"] is True


def test_an_import_path_norm_trains_and_is_recorded(example_on_path, tmp_path):
    result = train(load_config([f"norm={CENTRED}", "norm.affine=false", *TINY, f"out_dir={tmp_path / 'r'}"]))
    summary = result.summary
    assert summary["status"] == "ok"
    assert summary["config"]["norm"] == {"name": CENTRED, "momentum": 0.1, "affine": False}
    assert summary["norm"] == CENTRED and summary["norm_layers"] == {"conv": "CentredBatchNorm",
                                                                       "fc": "CentredBatchNorm"}
    assert summary["norm_batch_size"] == 32
    assert sum(type(m).__name__ == "CentredBatchNorm" for m in result.module.modules()) == 4  # LeNet's sites


def test_an_import_path_run_s_default_folder_has_no_colon(example_on_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(load_config([f"norm={CENTRED}", *TINY, "trainer.fast_dev_run=true"]))
    assert result.out_dir.parent == Path("runs") and ":" not in str(result.out_dir)
    assert "-lenet-centred_bn.layers.CentredBatchNorm-synthetic-s0" in result.out_dir.name


def test_the_same_import_path_run_gives_the_same_numbers(example_on_path, tmp_path):
    runs = [train(load_config([f"norm={CENTRED}", *TINY, "optim.lr=0.1", f"out_dir={tmp_path / str(i)}"])).summary
            for i in range(2)]
    assert runs[0]["test_acc"] == runs[1]["test_acc"] and runs[0]["train_loss"] == runs[1]["train_loss"]


def test_import_path_model_and_dataset(example_on_path, tmp_path):
    cfg = load_config([f"model={MLP}", "model.hidden=16", f"data={STRIPES}", "data.num_train=128",
                       "data.num_test=64", "data.image_size=8", "data.batch_size=32", "trainer.max_epochs=1",
                       "trainer.progress_bar=false", "trainer.accelerator=cpu", "norm=gn",
                       f"out_dir={tmp_path / 'r'}"])
    assert cfg.model == {"name": MLP, "hidden": 16}
    assert cfg.data.name == STRIPES and cfg.data.num_train == 128 and cfg.data.batch_size == 32
    summary = train(cfg).summary
    assert summary["status"] == "ok"
    assert summary["config"]["model"]["name"] == MLP and summary["config"]["data"]["image_size"] == 8


def test_a_plugin_declares_its_metadata_and_absent_metadata_is_safe(plugin_module):
    mod = plugin_module("byo_meta", """
        from torch import nn

        def plain(num_channels: int):
            return nn.GroupNorm(1, num_channels)

        def per_sample(num_channels: int):
            return nn.GroupNorm(1, num_channels)
        per_sample.batch_stats = False
        per_sample.replaces_activation = True
    """)
    assert norms.get(f"{mod}:plain").meta["batch_stats"] is True  # undeclared: treated as a batch norm
    assert not norms.replaces_activation(f"{mod}:plain")
    assert norms.replaces_activation(f"{mod}:per_sample")
    with pytest.raises(ConfigError, match=rf"norm={mod}:plain normalizes with batch statistics .* batch size >= 2"):
        load_config([f"norm={mod}:plain", *TINY, "data.batch_size=1"])
    assert load_config([f"norm={mod}:per_sample", *TINY, "data.batch_size=1"]).data.batch_size == 1


@pytest.mark.parametrize(("source", "given", "message"), [
    ("", "byo_nomod_xyz:Norm",
     r"^norm 'byo_nomod_xyz:Norm': cannot import module 'byo_nomod_xyz' \(ModuleNotFoundError"),
    ("raise RuntimeError('broken on purpose')\n", "{mod}:Norm",
     r"^norm '{mod}:Norm': cannot import module '{mod}' \(RuntimeError: broken on purpose\)$"),
    ("x = 1\n", "{mod}:Norm", r"^norm '{mod}:Norm': module '{mod}' has no attribute 'Norm'$"),
    ("x = 1\n", "{mod}:x", r"^norm '{mod}:x' is a int, not a class or function \(num_channels, \*\*options\)$"),
    ("def f():\n    pass\n", "{mod}:f", r"^norm '{mod}:f' takes \(\) but is called as \(num_channels, \*\*options\)$"),
    ("def f(c, width):\n    pass\n", "{mod}:f",
     r"^norm '{mod}:f': option 'width' has no default; every option after num_channels needs one$"),
    ("def f(c, width: 'NoSuchType' = 1):\n    pass\n", "{mod}:f", r"^norm '{mod}:f': cannot read its option types"),
    ("def f(c):\n    pass\nf.batch_stats = 'yes'\n", "{mod}:f",
     r"^norm '{mod}:f': attribute 'batch_stats' must be true or false, got 'yes'$"),
    ("", "not a path:", r"^norm 'not a path:' is not an import path; expected package.module:Name$"),
])
def test_a_broken_plugin_is_one_config_error_naming_it(plugin_module, source, given, message):
    mod = plugin_module(f"byo_bad_{uuid.uuid4().hex[:8]}", source)  # a fresh module: nothing cached
    with pytest.raises(ConfigError, match=message.format(mod=mod)):
        load_config([f"norm={given.format(mod=mod)}", *TINY])


def test_a_plugin_s_options_get_the_built_in_one_line_errors(example_on_path):
    with pytest.raises(ConfigError, match=rf"^unknown key 'norm.eps' for norm={CENTRED}; accepted: name, momentum, "
                                          "affine$"):
        load_config([f"norm={CENTRED}", "norm.eps=0.1", *TINY])
    with pytest.raises(ConfigError, match=r"^norm.affine must be true or false, got 'maybe'$"):
        load_config([f"norm={CENTRED}", "norm.affine=maybe", *TINY])
    with pytest.raises(ConfigError, match=r"^norm.momentum must be a number, got 'fast'$"):
        load_config([f"norm={CENTRED}", "norm.momentum=fast", *TINY])
    with pytest.raises(ConfigError, match=rf"^unknown key 'model.width' for model={MLP}; accepted: name, hidden$"):
        load_config([f"model={MLP}", "model.width=3", *TINY])
    with pytest.raises(ConfigError, match=r"^unknown norm 'centred'; accepted: bn, .*, none.*, or an import path "
                                          r"package.module:Name$"):
        load_config(["norm=centred", *TINY])


@pytest.mark.parametrize(("group", "source", "message"), [
    ("model", "def build(norm, num_classes):\n    pass\n",
     r"^model '{mod}:build' takes \(norm, num_classes\) but is called as \(norm, num_classes, in_channels, "
     r"image_size, \*\*options\)$"),
    ("model", "def build(norm, num_classes, in_channels, image_size, depth):\n    pass\n",
     r"^model '{mod}:build': option 'depth' has no default; every option after norm, num_classes, in_channels, "
     r"image_size needs one$"),
    ("data", "def load(root):\n    pass\n",
     r"^dataset '{mod}:load' takes \(root\) but is called as \(root, download, \*\*options\)$"),
    ("data", "import byo_nothing_here_xyz\n",
     r"^dataset '{mod}:load': cannot import module '{mod}' \(ModuleNotFoundError: No module named "
     r"'byo_nothing_here_xyz'\)$"),
    ("data", "def load(root, download):\n    pass\nload.sizes = 3\n",
     r"^dataset '{mod}:load': attribute 'sizes' must be a function, got 3$"),
])
def test_a_broken_model_or_dataset_plugin_is_one_config_error(plugin_module, group, source, message):
    mod = plugin_module(f"byo_bad_{uuid.uuid4().hex[:8]}", source)
    attr = "build" if group == "model" else "load"
    with pytest.raises(ConfigError, match=message.format(mod=mod)):
        load_config([f"{group}={mod}:{attr}", *TINY])


def test_the_cli_refuses_a_broken_plugin_with_exit_2_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "norm=byo_absent_module:Norm", *TINY, f"out_dir={out}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: norm 'byo_absent_module:Norm': cannot import module 'byo_absent_module' (ModuleNotFoundError: No "
        "module named 'byo_absent_module')"]
    assert not out.exists()


def test_a_grid_over_an_import_path_norm_survives_the_study_storage(tmp_path):
    args = ["-m", f"norm=bn,{CENTRED}", *TINY, "data.num_train=64", "data.num_test=32", f"results_dir={tmp_path}"]
    env = with_site(EXAMPLE / "src")
    first = run_cli("run", *args, env=env)
    assert first.returncode == 0, first.stderr
    assert f"norm={CENTRED} seed=0" in first.stdout
    again = run_cli("run", *args, env=env)  # resumes the stored study: the categorical value read back
    assert again.returncode == 0, again.stderr
    assert "2/2 trials done" in again.stdout and "[1/2]" not in again.stdout  # nothing ran again
    import optuna

    (db,) = tmp_path.glob("*/study.db")
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    assert [t.params for t in study.trials] == [{"norm": "bn"}, {"norm": CENTRED}]


# --- by entry point (the example package installed) --------------------------------------------------------


def test_list_shows_installed_plugins_with_their_origin(installed):
    proc = run_cli("list", env=with_site(installed))
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert "centred_bn (entry point normbench-centred-bn)" in lines["norms"]
    assert lines["norms"].startswith("bn, ")  # built-in names as before, without an origin
    assert "centred_mlp (entry point normbench-centred-bn)" in lines["models"]
    assert "stripes (entry point normbench-centred-bn)" in lines["datasets"]


def test_entry_point_norm_model_and_dataset_train_by_name(installed, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "norm=centred_bn", "norm.momentum=0.05", "model=centred_mlp", "model.hidden=16",
                   "data=stripes", "data.num_train=128", "data.num_test=64", "data.image_size=8",
                   "data.batch_size=32", "trainer.max_epochs=1", "trainer.progress_bar=false",
                   "trainer.accelerator=cpu", f"out_dir={out}", env=with_site(installed))
    assert proc.returncode == 0, proc.stderr
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["norm"] == {"name": "centred_bn", "momentum": 0.05, "affine": True}
    assert summary["config"]["model"] == {"name": "centred_mlp", "hidden": 16}
    assert summary["config"]["data"]["name"] == "stripes"
    bad = run_cli("run", "norm=centred_bn", "norm.eps=1", *TINY, env=with_site(installed))
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: unknown key 'norm.eps' for norm=centred_bn; accepted: name, momentum, "
                                  "affine")


def test_an_entry_point_that_fails_to_load_names_itself(tmp_path):
    site = tmp_path / "site"
    dist = site / "byo_broken-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: byo-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[normbench.norms]\nbroken = byo_missing_module:Norm\n")
    proc = run_cli("run", "norm=broken", *TINY, env=with_site(site))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: norm 'broken' (entry point byo_missing_module:Norm of byo-broken): cannot "
                                   "load it (ModuleNotFoundError: No module named 'byo_missing_module')")


def test_the_example_norm_centres_and_keeps_a_running_mean():
    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        from centred_bn.layers import CentredBatchNorm
    finally:
        sys.path.remove(str(EXAMPLE / "src"))
    layer = CentredBatchNorm(3, momentum=0.5, affine=False)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 3 + 2
    layer.double()
    y = layer(x)
    torch.testing.assert_close(y, x - x.mean(dim=(0, 2, 3), keepdim=True))
    torch.testing.assert_close(layer.running_mean, 0.5 * x.mean(dim=(0, 2, 3)))
    layer.eval()
    torch.testing.assert_close(layer(x), x - 0.5 * x.mean(dim=(0, 2, 3)).view(1, 3, 1, 1))
