"""`reproduce STUDY --plan`: runs, seed spread, resolvable effects after Holm, undecidable claims flagged, CPU cost;
and the same runs counted as two studies' evidence detected (--plan and --check warn)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats

from normbench.cli import main
from normbench.experiments import available
from normbench.experiments.overlap import committed_runs, find_overlaps
from normbench.experiments.plan import needed, rho_min

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def test_the_resolvable_effect_is_the_paired_t_power_formula():
    sd, n, alpha = 0.04, 10, 0.01
    by_hand = (stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert needed(sd, n, alpha, 0.8, False) == pytest.approx(by_hand)
    tost = (stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(0.9, n - 1)) * sd / math.sqrt(n)
    assert needed(sd, n, alpha, 0.8, True) == pytest.approx(tost)
    assert rho_min(16, 0.05, 0.8) == pytest.approx(math.tanh((1.6448536 + 0.8416212) * math.sqrt(1.06 / 13)))
    assert rho_min(3, 0.05, 0.8) is None


def test_plan_of_a_committed_study_flags_the_undecidable_claims(capsys):
    assert main(["reproduce", "d2l_lenet_bn", "--plan"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" (", 1)[0]: line for line in out.splitlines() if line.startswith("claim ")}
    assert out.startswith("study d2l_lenet_bn (scale cpu): 20 runs planned; claims at alpha 0.05, Holm over m = 5")
    assert "part main: norm (2) x 10 seeds = 20 runs; " in out and "CPU-hours estimated from committed runs" in out
    # the equivalence claim the issue names: +-2 points with a seed spread no 10 seeds can resolve
    eq = lines["claim scratch_equals_torch"]
    assert "UNDECIDABLE at n=10" in eq and "paired over 10 seeds" in eq and "(declared ±2.00 pp)" in eq
    assert "committed arms d2l_lenet_bn/main" in eq  # its own records are the pilot
    assert "UNDECIDABLE at n=10" in lines["claim reproduces_d2l_test"]
    assert "UNDECIDABLE" not in lines["claim reproduces_d2l_train"]  # a 0.2-point spread: +-2 points is enough
    assert "resolves a true difference of at least" in lines["claim precise_better"]
    # its bn arm is ema_vs_precise's 10 runs
    assert "WARNING: the same 10 run(s) are evidence of two studies: d2l_lenet_bn" in out and "ema_vs_precise" in out


def test_plan_falls_back_to_the_pooled_spread_and_says_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "d2l_lenet_bn.yaml", tmp_path / "experiments" / "pilotless.yaml")
    text = (tmp_path / "experiments" / "pilotless.yaml").read_text().replace("seeds: 10", "seeds: 5")
    # 3 epochs: no committed run has this config, so the spread is the pooled one of lenet on fashion_mnist
    text = text.replace("trainer.threads: 1", "trainer.threads: 1\n      trainer.max_epochs: 3")
    (tmp_path / "experiments" / "pilotless.yaml").write_text(text)
    monkeypatch.setenv("NORMBENCH_ROOT", str(tmp_path))
    assert main(["reproduce", "pilotless", "--plan", f"results_dir={RESULTS}"]) == 0
    out = capsys.readouterr().out
    # no committed run of the 3-epoch configurations: their steps are measured here, scaled by committed runs
    # of the same model and dataset
    cost = next(line for line in out.splitlines() if line.startswith("part main:"))
    assert "training steps measured on this machine for 2 (scaled x" in cost, cost
    assert "calibrated by 3 committed configurations" in cost
    hours = float(cost.split("; ")[1].split(" CPU-hours")[0])
    # 10 runs of 3 epochs: committed 10-epoch runs of this LeNet take ~46 CPU-s, so ~14 s each: well inside
    assert 0.005 < hours < 1.0, cost  # the order of magnitude (timings on a loaded machine vary)
    eq = next(line for line in out.splitlines() if line.startswith("claim scratch_equals_torch"))
    assert "pooled over" in eq and "committed configurations of lenet on fashion_mnist" in eq
    assert "UNDECIDABLE at n=5" in eq


@pytest.mark.parametrize("name", available())
def test_plan_works_on_every_shipped_study(name, capsys):
    assert main(["reproduce", name, "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"study {name} (scale cpu)") and "Holm over m =" in out


def test_plan_at_the_smoke_scale_has_no_spread_and_says_so(capsys):
    assert main(["reproduce", "gn_batch_size", "--plan", "scale=smoke"]) == 0
    out = capsys.readouterr().out
    assert "seed spread unknown" in out
    assert ("training steps measured on this machine for 18 (uncalibrated: no committed run of this model and "
            "data") in out


# ---------------------------------------------------------------------------------------------- same runs


def test_the_d2l_bn_arm_and_ema_vs_precise_are_detected_as_the_same_runs():
    overlaps = find_overlaps(committed_runs(RESULTS), "ema_vs_precise")
    (o,) = overlaps
    assert (o.a, o.b) == (("d2l_lenet_bn", "main"), ("ema_vs_precise", "main"))
    assert len(o.pairs) == 10 and {x.seed for x, _ in o.pairs} == set(range(10))
    assert all(x.test_acc == y.test_acc for x, y in o.pairs)  # the numbers agree: one run, stored twice
    assert "d2l_lenet_bn (part main, trials 0, 2, 4" in o.warning() and "count them once" in o.warning()


def _copy_study(name: str, to: Path) -> Path:
    shutil.copytree(RESULTS / name / "records", to / name / "records")
    return to / name / "records" / "main.jsonl"


def _rewrite(path: Path, change) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        change(r["summary"]["config"])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_detection_ignores_measurements_and_neutral_keys_but_not_training_keys(tmp_path):
    _copy_study("d2l_lenet_bn", tmp_path)
    ema = _copy_study("ema_vs_precise", tmp_path)
    # where it ran and what it measured do not make it another run
    _rewrite(ema, lambda c: (c["calib"].update(samples=1024), c.update(out_dir="/elsewhere"),
                             c["trainer"].update(chunk_steps=1)))
    assert len(find_overlaps(committed_runs(tmp_path))[0].pairs) == 10
    # another learning rate does
    _rewrite(ema, lambda c: c["optim"].update(lr=0.5))
    assert find_overlaps(committed_runs(tmp_path)) == []


def test_check_warns_about_shared_runs_and_still_passes(capsys):
    assert main(["reproduce", "ema_vs_precise", "--check"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: the same 10 run(s) are evidence of two studies: d2l_lenet_bn (part main" in out
    assert "ema_vs_precise (part main, trials 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in out
