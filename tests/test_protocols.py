"""One factor at a time: fixed_optimizer_batch derives emulated workers; a contrast across optimizer batch, lr or
steps is refused with one line unless declared confounded; the facts the check uses match the committed records."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from normbench.errors import ConfigError
from normbench.experiments import available, load_experiment
from normbench.experiments.claims import evaluate_all
from normbench.experiments.protocols import config_facts
from normbench.experiments.readme import render
from normbench.experiments.spec import parse_experiment

ROOT = Path(__file__).resolve().parents[1]

STUDY = {
    "title": "t", "question": "q", "protocol": "p", "declared": "2026-12-03",
    "parts": {"main": {
        "base": {"data": "synthetic", "data.num_train": 512, "trainer.max_epochs": 2, "data.drop_last": True},
        "grid": {"norm": ["bn", "gn"], "data.batch_size": [16, 32]},
        "seeds": 2, "lr_scaling": {"base_batch_size": 256}}},
    "claims": [{"id": "bn_small_worse", "statement": "BN at 16 is worse than at 32.",
                "test": {"kind": "difference", "part": "main", "metric": "test_error",
                         "a": {"norm": "bn", "data.batch_size": 16}, "b": {"norm": "bn", "data.batch_size": 32},
                         "expect": "greater"}}],
}


def _study(**part_changes) -> dict:
    raw = copy.deepcopy(STUDY)
    raw["parts"]["main"].update(part_changes)
    return raw


def test_a_confounded_contrast_is_refused_with_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_experiment("s", _study(), tmp_path / "s.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("study s: claim 'bn_small_worse' contrasts configurations")
    assert "optimizer batch (16 vs 32)" in msg and "lr (0.0625 vs 0.125)" in msg
    assert "optimizer steps (32 vs 64)" in msg and "confounded" in msg


def test_a_declared_confound_loads_and_is_shown(tmp_path):
    raw = _study()
    raw["claims"][0]["confounded"] = "lr_scaling: the batch sets the optimizer batch, lr and steps too"
    exp = parse_experiment("s", raw, tmp_path / "s.yaml")
    assert exp.claims[0]["confounded"].startswith("lr_scaling")
    from normbench.experiments.records import results_from_records

    rows = [{"number": i, "state": "COMPLETE", "params": {"norm": "bn", "data.batch_size": b, "seed": s},
             "summary": {"test_acc": 0.5 + 0.01 * i, "status": "ok"}, "fail_reason": None,
             "datetime_start": None, "datetime_complete": None}
            for i, (b, s) in enumerate([(16, 0), (16, 1), (32, 0), (32, 1)])]
    claims = evaluate_all(exp.claims, {"main": results_from_records("s-main", rows)})
    assert claims[0].to_record()["confounded"] == exp.claims[0]["confounded"]
    prov = {"parts": {}, "code": [], "versions": [], "machine": [],
            "time": {"trial_wall_s": {"n": 0, "total": 0, "median": 0}, "cpu_hours": 0, "first_start": None,
                     "last_complete": None}}
    text = render(exp, None, claims, [], [], prov)
    assert "_Confounded contrast, declared: lr_scaling: the batch sets" in text


def test_a_contrast_within_one_protocol_needs_no_declaration(tmp_path):
    raw = _study()
    raw["claims"][0]["test"]["a"] = {"norm": "gn", "data.batch_size": 16}
    raw["claims"][0]["test"]["b"] = {"norm": "bn", "data.batch_size": 16}
    parse_experiment("s", raw, tmp_path / "s.yaml")  # same optimizer batch, lr and steps: loads
    raw["claims"] = [{"id": "range", "statement": "s", "test": {
        "kind": "range_less", "part": "main", "metric": "test_error", "over": "data.batch_size",
        "a": {"norm": "gn"}, "b": {"norm": "bn"}}}]
    with pytest.raises(ConfigError, match=r"claim 'range' contrasts configurations that differ in optimizer batch"):
        parse_experiment("s", raw, tmp_path / "s.yaml")


def test_fixed_optimizer_batch_derives_emulated_workers_and_frees_the_contrast(tmp_path):
    raw = _study(fixed_optimizer_batch=256)
    raw["parts"]["main"]["grid"]["data.batch_size"] = [256, 32, 4]
    raw["claims"][0]["test"]["a"]["data.batch_size"] = 4
    raw["claims"][0]["test"]["b"]["data.batch_size"] = 256
    exp = parse_experiment("s", raw, tmp_path / "s.yaml")  # the same contrast, now one factor at a time
    spec = exp.parts["main"]
    cells = {(c["norm"], c["data.batch_size"]): c["trainer.emulate_devices"] for c in spec.grid_combinations()}
    assert cells == {("bn", 256): 1, ("bn", 32): 8, ("bn", 4): 64, ("gn", 256): 1, ("gn", 32): 8, ("gn", 4): 64}
    facts = {f for _, f in config_facts(spec)}
    assert len(facts) == 1
    (f,) = facts
    assert (f.optimizer_batch, f.lr, f.steps) == (256, 1.0, 2 * (512 // 256))
    # what the run composes: every trial's optimizer batch is 256 at lr 1.0 (lr_scaling: 1.0 x 256 / 256)
    from normbench.run_facts import effective_batch_size
    from normbench.sweep.plan import make_plan

    plan = make_plan(spec, [])
    for combo in plan.combos:
        cfg, _ = plan.composer.compose({**combo, "seed": 0})
        assert effective_batch_size(cfg) == 256 and cfg.optim.lr == 1.0
        assert cfg.trainer.emulate_devices * cfg.data.batch_size == 256


def test_fixed_optimizer_batch_in_a_linked_dimension_and_with_accumulation(tmp_path):
    raw = _study(fixed_optimizer_batch=64)
    raw["parts"]["main"]["base"]["trainer.accumulate_grad_batches"] = 2
    raw["parts"]["main"]["grid"] = {"norm": ["bn"], "setup": [{"data.batch_size": 32}, {"data.batch_size": 8}]}
    raw["claims"] = []
    exp = parse_experiment("s", raw, tmp_path / "s.yaml")
    assert [c["trainer.emulate_devices"] for c in exp.parts["main"].grid_combinations()] == [1, 4]
    assert {f.optimizer_batch for _, f in config_facts(exp.parts["main"])} == {64}


@pytest.mark.parametrize("change, message", [
    ({"data.batch_size": [256, 48]}, r"fixed_optimizer_batch 256 is not a multiple of data.batch_size 48 x "
                                     r"accumulation 1; accepted batch sizes: the divisors of 256"),
    ({"trainer.emulate_devices": [1, 2]}, r"remove trainer.emulate_devices from the part's grid"),
])
def test_fixed_optimizer_batch_refuses_with_one_line(change, message, tmp_path):
    raw = _study(fixed_optimizer_batch=256)
    raw["parts"]["main"]["grid"].update(change)
    with pytest.raises(ConfigError, match=message) as e:
        parse_experiment("s", raw, tmp_path / "s.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith("study s: part 'main'")


def test_fixed_optimizer_batch_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ConfigError, match=r"fixed_optimizer_batch must be an integer >= 1"):
        parse_experiment("s", _study(fixed_optimizer_batch="256"), tmp_path / "s.yaml")


def test_the_shipped_cross_protocol_claims_declare_their_confound():
    declared = {(name, c["id"]) for name in available() for c in load_experiment(name).claims if c.get("confounded")}
    assert {("gn_batch_size", "bn_degrades_at_b2"), ("gn_batch_size", "gn_flatter_than_bn"),
            ("gn_batch_size", "single_device_bn_degrades_at_b2"), ("norm_leaderboard", "gn_more_stable_than_bn"),
            ("momentum", "horizon_not_momentum")} <= declared
    # without the disclosure the leaderboard's cross-protocol claim is refused
    raw = yaml.safe_load((ROOT / "experiments" / "norm_leaderboard.yaml").read_text())
    for c in raw["claims"]:
        c.pop("confounded", None)
    with pytest.raises(ConfigError, match=r"claim 'gn_more_stable_than_bn' contrasts configurations that differ in "
                                          r"optimizer batch \(32 vs 256\), lr \(0.125 vs 1\), optimizer steps"):
        parse_experiment("norm_leaderboard", raw, ROOT / "experiments" / "norm_leaderboard.yaml")


@pytest.mark.parametrize("name", ["gn_batch_size", "accumulation", "norm_leaderboard"])
def test_the_facts_match_what_the_committed_runs_recorded(name):
    exp = load_experiment(name)
    checked = 0
    for part, spec in exp.parts.items():
        facts = config_facts(spec)
        for line in (ROOT / "results" / name / "records" / f"{part}.jsonl").read_text().splitlines():
            row = json.loads(line)
            s = row["summary"]
            if row["state"] != "COMPLETE" or not s:
                continue
            (f,) = [f for c, f in facts if all(str(row["params"].get(k)) == str(v) for k, v in c.items())]
            assert (s["effective_batch_size"], s["lr"], s["optimizer_steps"]) == (f.optimizer_batch, f.lr, f.steps)
            checked += 1
    assert checked >= 60


OFAT_STUDY = """\
title: One factor at a time
question: Does BN's normalization batch matter when the optimizer batch is fixed?
protocol: Synthetic data, one epoch, the optimizer batch held at 32 by emulated workers.
declared: "2026-12-03"
parts:
  main:
    base: {data: synthetic, data.num_train: 256, data.num_test: 64, trainer.max_epochs: 1,
           trainer.accelerator: cpu, trainer.threads: 1, calib.samples: 64, norm: bn}
    fixed_optimizer_batch: 32
    grid:
      data.batch_size: [32, 8]
    seeds: 2
    lr_scaling: {base_batch_size: 256}
claims:
  - id: norm_batch_matters
    statement: BN's error at a normalization batch of 8 exceeds its error at 32 (optimizer batch 32 for both).
    test: {kind: difference, part: main, metric: test_error, a: {data.batch_size: 8}, b: {data.batch_size: 32},
           expect: greater}
"""


def test_a_fixed_optimizer_batch_study_trains_one_factor_at_a_time(tmp_path, monkeypatch, capsys):
    """Real training (tiny synthetic data): every run's record has the same optimizer batch, lr and steps."""
    import torch

    from normbench.cli import main

    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "ofat.yaml").write_text(OFAT_STUDY)
    monkeypatch.setenv("NORMBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert main(["reproduce", "ofat"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (tmp_path / "results" / "ofat" / "records" / "main.jsonl").read_text()
            .splitlines()]
    assert len(rows) == 4
    seen = {(r["params"]["data.batch_size"], r["params"]["trainer.emulate_devices"]) for r in rows}
    assert seen == {(32, 1), (8, 4)}
    facts = {(r["summary"]["effective_batch_size"], r["summary"]["lr"], r["summary"]["optimizer_steps"]) for r in rows}
    assert facts == {(32, 0.125, 256 // 32)}
    claims = json.loads((tmp_path / "results" / "ofat" / "claims.json").read_text())
    assert claims[0]["confounded"] is None and claims[0]["p_value"] is not None
