"""`reproduce STUDY --add norm=...`: a new norm run under a study's protocol, reported beside its baselines.

A tiny study declared here (two norms, one batch size, two seeds, at scale smoke) stands for a committed one:
its results are made once per module, then each test copies them and adds the example plugin's norm
(examples/centred_bn, by import path).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from normbench.cli import main
from normbench.errors import ConfigError
from tests.helpers import study_root

EXAMPLE_SRC = Path(__file__).resolve().parent.parent / "examples" / "centred_bn" / "src"
CENTRED = "centred_bn.layers:CentredBatchNorm"

STUDY = """\
title: A tiny norm comparison
question: Does bn differ from gn on tiny synthetic data?
protocol: Synthetic data, one epoch, one batch size, the smoke scale's two seeds.
declared: "2026-12-03"
parts:
  main:
    description: bn and gn at batch 32
    base:
      data: synthetic
      data.num_train: 512
      data.num_test: 256
      data.noise: 1.0
      model.act: relu
      trainer.max_epochs: 1
      trainer.accelerator: cpu
      calib.samples: 128
      optim.lr: 0.1
    grid:
      setup:
        - {norm: bn}
        - {norm: gn, norm.groups: 2}
      data.batch_size: [32]
    seeds: 2
  other:
    description: a part that compares no norms (its records are carried over as they are)
    base: {data: synthetic, data.num_train: 128, data.num_test: 64, trainer.max_epochs: 1, calib.samples: 64}
    grid:
      data.batch_size: [16]
    seeds: 1
tables:
  - name: table
    part: main
    caption: Test error by norm.
    layout: pivot
    rows: norm
    cols: data.batch_size
    value: test_acc
    metric: error
  - name: table_vs_bn
    part: main
    caption: Difference to bn, paired by seed.
    layout: pivot
    rows: norm
    cols: data.batch_size
    value: test_acc
    metric: error
    compare: bn
    deltas_only: true
claims:
  - id: gn_vs_bn
    statement: gn's test error is lower than bn's.
    test: {kind: difference, part: main, metric: test_error, a: {norm: gn}, b: {norm: bn}, expect: less}
  - id: bn_top2
    statement: bn is among the two norms with the lowest test error.
    test: {kind: rank, part: main, metric: test_error, select: {norm: bn}, among: {data.batch_size: 32},
           at_most: 2}
scales:
  smoke:
    description: this study's own settings, seeds 0 and 1
    seeds: [0, 1]
"""


@pytest.fixture(scope="module")
def baselines_once(tmp_path_factory) -> Path:
    """The tiny study at scale smoke, run once: its root, with results/tiny-smoke/ as committed baselines."""
    once = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:
        study_root(once, mp, "tiny", STUDY)
        assert main(["reproduce", "tiny", "scale=smoke"]) == 0
    return once


@pytest.fixture
def root(tmp_path, monkeypatch, baselines_once, capsys) -> Path:
    """A copy of the study's root with its baselines, the example plugin importable."""
    study_root(tmp_path, monkeypatch, "tiny", STUDY)
    shutil.copytree(baselines_once / "results", tmp_path / "results")
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    capsys.readouterr()
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_add_runs_only_the_new_arm_and_writes_it_beside_the_baselines(root, capsys):
    committed = root / "results" / "tiny-smoke"
    before = snapshot(committed)
    assert main(["reproduce", "tiny", "--add", f"norm={CENTRED}", "norm.momentum=0.2", "scale=smoke"]) == 0
    out = capsys.readouterr().out
    assert "study tiny, part main, new arm norm=centred_bn.layers:CentredBatchNorm norm.momentum=0.2" in out
    assert "part other" not in out  # no norm to add there: nothing of it runs
    assert snapshot(committed) == before  # the baselines are read, never written

    (folder,) = (root / "runs" / "add").glob("tiny-smoke-add-*")
    records = rows_of(folder / "records" / "main.jsonl")
    baseline = rows_of(committed / "records" / "main.jsonl")
    assert records[:len(baseline)] == baseline  # the committed lines, unchanged, first
    new = records[len(baseline):]
    assert [r["params"] for r in new] == [{"norm": CENTRED, "norm.momentum": 0.2, "data.batch_size": 32, "seed": s}
                                          for s in (0, 1)]
    assert [r["number"] for r in new] == [len(baseline), len(baseline) + 1]  # numbered after the baselines'
    cfg = new[0]["summary"]["config"]
    assert cfg["norm"] == {"name": CENTRED, "momentum": 0.2, "affine": True}
    # exactly the protocol of the baselines: every setting but the norm is theirs
    base_cfg = baseline[0]["summary"]["config"]
    assert {k: v for k, v in cfg.items() if k not in ("norm", "out_dir", "results_dir")} == \
        {k: v for k, v in base_cfg.items() if k not in ("norm", "out_dir", "results_dir")}
    assert rows_of(folder / "records" / "other.jsonl") == rows_of(committed / "records" / "other.jsonl")

    table = (folder / "table.md").read_text()
    assert f"| {CENTRED} |" in table and "| bn |" in table and "| gn |" in table
    assert "3 configurations × 2 seeds = 6 runs" in table
    deltas = (folder / "table_vs_bn.md").read_text()
    new_line = next(line for line in deltas.splitlines() if line.startswith(f"| Δ {CENTRED} − bn |"))
    # the paired difference to bn, from the two seeds' runs of each
    acc = {(r["params"]["norm"], r["params"]["seed"]): r["summary"]["test_acc"] for r in records
           if r["params"].get("data.batch_size") == 32}
    paired = [100 * (acc[("bn", s)] - acc[(CENTRED, s)]) for s in (0, 1)]
    assert f"{sum(paired) / 2:+.2f}" in new_line
    claims = {c["id"]: c for c in json.loads((folder / "claims.json").read_text())}
    assert set(claims) == {"gn_vs_bn", "bn_top2"}
    note = (folder / "ADDED.md").read_text()
    assert "seeds [0, 1]" in note and "New rows: 2 runs in part(s) main" in note
    assert f"Every other row: the records of {committed} (6 runs)" in note and "CPU-hours" in note
    assert (folder / "README.md").read_text().startswith(note)

    # a second command finds every new run done: nothing trains, the same files come out
    first = snapshot(folder)
    assert main(["reproduce", "tiny", "--add", f"norm={CENTRED}", "norm.momentum=0.2", "scale=smoke"]) == 0
    assert "[1/2]" not in capsys.readouterr().out
    assert snapshot(folder) == first


def test_add_plan_says_what_runs_and_its_cost_and_runs_nothing(root, capsys):
    assert main(["reproduce", "tiny", "--add", f"norm={CENTRED}", "--plan", "scale=smoke"]) == 0
    out = capsys.readouterr().out
    assert "part main: 1 configuration(s) x (2 seeds [0, 1]) = 2 runs" in out
    assert "data.batch_size=32: 2 runs, ~" in out and "median of 4 committed runs of this protocol" in out
    assert "estimated cost: ~" in out
    assert not (root / "runs").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--add"], r"^--add needs norm=NAME"),
    (["--add", "norm=bn"], r"^study tiny, part main: the arm norm=bn is already one of its arms$"),
    (["--add", f"norm={CENTRED}", "norm.eps=1"],
     rf"^sweep tiny-smoke-main-add-.*: unknown key 'norm.eps' for norm={CENTRED}; accepted: name, momentum, affine$"),
    (["--add", "norm=byo_no_such_module:Norm"], r"^sweep .*: norm 'byo_no_such_module:Norm': cannot import module"),
    (["--add", f"norm={CENTRED}", "--check"], r"^--add goes with --plan alone, not --check$"),
    (["--add", f"norm={CENTRED}", "part=main"], r"^--add runs the new arm in every part that compares norms"),
    (["--add", f"norm={CENTRED}", "baselines=nowhere"],
     r"^--add needs the baselines of study tiny at scale smoke: nowhere/tiny-smoke/records/ does not exist"),
])
def test_add_refuses_bad_input_before_any_work(root, args, message):
    with pytest.raises(ConfigError, match=message):
        from normbench.experiments.add import main as add

        add(["tiny", *args, "scale=smoke"])
    assert not (root / "runs").exists()


def test_add_on_the_command_line_exits_2_with_one_line(root, capsys):
    assert main(["reproduce", "tiny", "--add", "norm.momentum=0.2", "scale=smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --add needs norm=NAME")


def test_add_at_a_scale_without_baselines_runs_the_study_s_own_arms_first(tmp_path, monkeypatch, capsys):
    study_root(tmp_path, monkeypatch, "tiny", STUDY)  # no results/: nothing committed at scale smoke
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    assert main(["reproduce", "tiny", "--add", f"norm={CENTRED}", "--plan", "scale=smoke"]) == 0
    out = capsys.readouterr().out
    assert "study tiny has no records at scale smoke: its 6 runs at that scale run first" in out
    assert "data.batch_size=32: 2 runs, cost unknown" in out
    assert not (tmp_path / "runs").exists()

    work = tmp_path / "work"
    assert main(["reproduce", "tiny", "--add", f"norm={CENTRED}", "scale=smoke", f"work_dir={work}"]) == 0
    assert (work / "tiny-smoke-main-add-centred_bn.layers-CentredBatchNorm" / "study.db").is_file()
    baselines = tmp_path / "runs" / "add" / "baselines" / "tiny-smoke"
    assert len(rows_of(baselines / "records" / "main.jsonl")) == 4
    (folder,) = (tmp_path / "runs" / "add").glob("tiny-smoke-add-*")
    records = rows_of(folder / "records" / "main.jsonl")
    assert [r["params"]["norm"] for r in records] == ["bn", "gn", "bn", "gn", CENTRED, CENTRED]
    assert f"| {CENTRED} |" in (folder / "table.md").read_text()
    assert f"Every other row: the records of {baselines} (6 runs)" in (folder / "ADDED.md").read_text()
    assert not (tmp_path / "results").exists()


TUNED_STUDY = """\
title: A tiny tuned comparison
question: Which lr does each norm choose?
protocol: Synthetic data, one epoch, the lr tuned per norm on a validation split (2 configurations).
declared: "2026-12-03"
parts:
  tuned:
    description: bn and gn, lr tuned per norm
    base: {data: synthetic, data.num_train: 256, data.num_test: 64, trainer.max_epochs: 1, calib.samples: 64,
           trainer.accelerator: cpu}
    grid:
      norm: [bn, gn]
    seeds: 2
    tuning:
      space: {optim.lr: {type: float, low: 0.05, high: 0.5, log: true}}
      trials: 2
      sampler: qmc
      sampler_seed: 0
      seeds: [100]
      objective: val_acc
      val_fraction: 0.25
tables:
  - name: table
    part: tuned
    caption: Each norm at its tuned lr.
    columns: [val_acc, test_acc, lr]
"""


def test_add_to_a_tuned_part_tunes_the_new_arm_with_the_same_budget(tmp_path, monkeypatch, capsys):
    study_root(tmp_path, monkeypatch, "tuned", TUNED_STUDY)
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    assert main(["reproduce", "tuned"]) == 0  # the committed baselines: 2 arms x (2 tuning + 2 final) runs
    committed = tmp_path / "results" / "tuned"
    capsys.readouterr()
    assert main(["reproduce", "tuned", "--add", f"norm={CENTRED}"]) == 0
    out = capsys.readouterr().out
    assert "tuning arm centred_bn.layers-CentredBatchNorm (2 configurations)" in out
    (folder,) = (tmp_path / "runs" / "add").glob("tuned-add-*")
    tuning = rows_of(folder / "records" / "tuned-tuning.jsonl")
    base_tuning = rows_of(committed / "records" / "tuned-tuning.jsonl")
    assert tuning[:len(base_tuning)] == base_tuning
    new_tuning = tuning[len(base_tuning):]
    # the same budget: 2 configurations of the same space at the same tuning seed, on the same validation split
    assert len(new_tuning) == 2 and {r["params"]["seed"] for r in new_tuning} == {100}
    assert sorted(r["params"]["optim.lr"] for r in new_tuning) == \
        sorted(r["params"]["optim.lr"] for r in base_tuning if r["params"]["norm"] == "bn")
    assert {r["summary"]["config"]["data"]["val_fraction"] for r in new_tuning} == {0.25}
    final = [r for r in rows_of(folder / "records" / "tuned.jsonl") if r["params"]["norm"] == CENTRED]
    assert [r["params"]["seed"] for r in final] == [0, 1]
    table = (folder / "table.md").read_text()
    assert f"| {CENTRED} |" in table
    note = (folder / "ADDED.md").read_text()
    assert "New rows: 2 runs in part(s) tuned (+ 2 tuning runs)" in note
