"""The CPU fast path (normbench.training.fast_path): bf16 autocast with float32 norms, channels-last, and the
per-norm choice of `trainer.fast_path`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normbench.config import load_config
from normbench.metrics.accuracy import evaluate
from normbench.models import build_model
from normbench.norms import available
from normbench.train import build_run_model, load_run_data, train
from normbench.training import fast_path as fp
from tests.helpers import TINY, run_cli

RESNET = ["model=resnet_fmnist", "model.depth=8", "model.width=8"]
TABLE = {"models": {"resnet_fmnist": {
    "bn": {"precision": "bf16-mixed", "channels_last": True, "compile": False, "speedup": {"128": 1.6},
           "verified": {"study": "fast_path_check", "held": True, "margin_pp": 1.0}},
    "gn": {"precision": "bf16-mixed", "channels_last": False, "compile": False, "speedup": {"128": 1.2}},
    "ln": {"precision": "32", "channels_last": False, "compile": False, "speedup": {"128": 1.0}},
    "frn": {"precision": "32", "channels_last": False, "compile": True, "speedup": {"128": 1.5},
            "verified": {"study": "fast_path_check", "held": False, "margin_pp": 1.0}},
}}}


def test_off_keeps_the_config():
    assert fp.resolve_fast_path("off", "resnet_fmnist", "bn", "cpu", 1.0, TABLE) == ({}, "off")


def test_fastest_takes_the_measured_variant():
    settings, why = fp.resolve_fast_path("fastest", "resnet_fmnist", "gn", "cpu", 1.0, TABLE)
    assert settings == {"precision": "bf16-mixed", "channels_last": False, "compile": False}
    assert "bf16-mixed + eager" in why and "1.20x at batch 128" in why


@pytest.mark.parametrize("norm, margin, fast, reason", [
    ("bn", 1.0, True, "equivalent to float32 eager within 1.0 pp"),
    ("bn", 0.5, False, "wider than trainer.fast_path_margin=0.5"),
    ("gn", 1.0, False, "has no science check"),
    ("frn", 1.0, False, "was not shown equivalent"),
    ("ln", 1.0, False, "nothing measured faster"),
    ("evonorm_b0", 1.0, False, "not in the measured table"),
])
def test_auto_needs_a_science_check_within_the_margin(norm, margin, fast, reason):
    settings, why = fp.resolve_fast_path("auto", "resnet_fmnist", norm, "cpu", margin, TABLE)
    assert (settings != fp.EAGER_FP32) is fast
    assert reason in why


def test_the_table_is_for_cpu_only():
    settings, why = fp.resolve_fast_path("auto", "resnet_fmnist", "bn", "gpu", 1.0, TABLE)
    assert settings == {} and "not applied" in why


def test_the_committed_table_never_chooses_a_slower_variant():
    for model, norms in fp.fast_path_table()["models"].items():
        for norm, entry in norms.items():
            assert all(float(s) >= 1.0 for s in entry["speedup"].values()), (model, norm)


@pytest.mark.parametrize("norm", [n for n in available() if n != "none"])
def test_norms_compute_in_float32_under_bf16_autocast(norm):
    """Every norm site gets float32 input under autocast, so its output, batch statistics and running
    statistics are those of float32 arithmetic on the (bf16-rounded) activation."""
    torch.manual_seed(0)
    net = build_model("resnet_fmnist", norm, 10, 1, 28, depth=8, width=8).train()
    assert fp.float32_norms(net, list(net.norm_sites)) == len(net.norm_sites) > 0
    modules = dict(net.named_modules())
    seen: dict[str, tuple[torch.dtype, torch.dtype]] = {}
    for site in net.norm_sites:
        modules[site].register_forward_hook(
            lambda m, args, out, site=site: seen.__setitem__(site, (args[0].dtype, out.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(net(torch.randn(8, 1, 28, 28)), torch.arange(8)).backward()
    assert seen and all(dt == (torch.float32, torch.float32) for dt in seen.values()), seen
    for name, buf in net.named_buffers():
        if buf.is_floating_point():
            assert buf.dtype == torch.float32, name


def test_a_bf16_channels_last_run_records_its_parts_and_evaluates_in_float32(tmp_path):
    over = [*TINY, *RESNET, "norm=bn", "trainer.precision=bf16-mixed", "trainer.channels_last=true",
            "logger=none", "trainer.threads=1"]
    a = train(load_config([*over, f"out_dir={tmp_path / 'a'}"])).summary
    b = train(load_config([*over, f"out_dir={tmp_path / 'b'}"])).summary
    assert a["precision"] == "bf16-mixed" and a["channels_last"] is True and a["fast_path"] == "off"
    assert a["precision_parts"]["convolutions_and_linear"] == "bfloat16"
    assert a["precision_parts"]["norms_and_batch_statistics"] == "float32"
    for key in ("test_acc", "test_loss", "train_loss", "calib_mean_rel_err"):
        assert a[key] == b[key], key  # deterministic on CPU
    # Evaluation ran in float32: the checkpointed weights evaluated in float32 give the recorded loss exactly.
    cfg = load_config([*over, f"out_dir={tmp_path / 'a'}"])
    data = load_run_data(cfg)
    net = build_run_model(cfg, data)
    state = torch.load(tmp_path / "a" / "last.ckpt", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    result = evaluate(net, data.loader("test", cfg.data.eval_batch_size))
    assert result.loss == pytest.approx(a["test_loss"], rel=1e-9, abs=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = evaluate(net, data.loader("test", cfg.data.eval_batch_size))
    assert low.loss != result.loss  # the check could tell: bf16 evaluation gives another loss


def test_fast_path_fastest_applies_the_table_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "fast_path_table", lambda path=fp.FAST_PATHS_FILE: TABLE)
    rec = train(load_config([*TINY, *RESNET, "norm=gn", "trainer.fast_path=fastest", "logger=none",
                             f"out_dir={tmp_path}"])).summary
    assert rec["precision"] == "bf16-mixed" and rec["config"]["trainer"]["precision"] == "bf16-mixed"
    assert rec["fast_path"].startswith("fastest: bf16-mixed")
    rec = train(load_config([*TINY, *RESNET, "norm=frn", "trainer.fast_path=auto", "logger=none",
                             f"out_dir={tmp_path / 'frn'}"])).summary
    assert rec["precision"] == "32" and rec["compiled"] is False
    assert "not shown equivalent" in rec["fast_path"]


def test_bad_fast_path_values_are_one_line_errors():
    r = run_cli("run", "trainer.fast_path=quick", *TINY)
    assert r.returncode == 2 and "trainer.fast_path" in r.stderr and "off, auto, fastest" in r.stderr
    r = run_cli("run", "trainer.fast_path_margin=0", *TINY)
    assert r.returncode == 2 and "trainer.fast_path_margin" in r.stderr


def test_verify_from_copies_the_committed_science_check_into_the_table(tmp_path):
    """benchmarks.fast_path --verify-from: each norm's entry gets the verdict of the committed study's claim on
    exactly the variant the table chooses; a variant the study did not run gets none."""
    import json
    from pathlib import Path

    from benchmarks.fast_path import verify_from

    table = json.loads(json.dumps(TABLE))
    for entry in table["models"]["resnet_fmnist"].values():
        entry.pop("verified", None)
    table["models"]["resnet_fmnist"]["gn"]["channels_last"] = True  # not the variant the study ran
    path = tmp_path / "fast_paths.json"
    path.write_text(json.dumps(table))
    study = Path(__file__).resolve().parents[1] / "results" / "fast_path_check"
    lines = verify_from(study, path)
    got = json.loads(path.read_text())["models"]["resnet_fmnist"]
    claims = {c["id"]: c for c in json.loads((study / "claims.json").read_text())}
    assert got["bn"]["verified"]["held"] is claims["bn_bf16_cl_same_accuracy"]["held"]
    assert got["bn"]["verified"]["margin_pp"] == 1.5 and got["bn"]["verified"]["n"] == 6
    assert got["frn"]["verified"]["held"] is claims["frn_compile_same_accuracy"]["held"]
    assert "verified" not in got["gn"] and any(line.startswith("gn: the study checked") for line in lines)
    assert "verified" not in got["ln"]
    settings, why = fp.resolve_fast_path("auto", "resnet_fmnist", "bn", "cpu", 1.5,
                                         json.loads(path.read_text()))
    assert (settings["precision"] == "bf16-mixed") is claims["bn_bf16_cl_same_accuracy"]["held"], why
