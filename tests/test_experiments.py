"""Studies: declarations, `reproduce` end to end on tiny data, `--check`, claims against scipy, `--list`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from normbench.cli import main
from normbench.errors import ConfigError
from normbench.experiments import available, load_experiment
from normbench.experiments.spec import parse_experiment
from tests.helpers import study_root

TINY_STUDY = """\
title: A tiny study
question: Does bn differ from gn on tiny synthetic data?
protocol: Synthetic data, one epoch, two batch sizes, three seeds.
declared: "2026-11-30"
parts:
  main:
    description: bn and gn at two batch sizes
    base:
      data: synthetic
      data.num_train: 256
      data.num_test: 128
      trainer.max_epochs: 1
      trainer.accelerator: cpu
      calib.samples: 128
    grid:
      norm: [bn, gn]
      data.batch_size: [16, 32]
    seeds: 3
tables:
  - name: table
    part: main
    caption: Test error by norm and batch.
    layout: pivot
    rows: norm
    cols: data.batch_size
    value: test_acc
    metric: error
    compare: bn
  - name: table_long
    part: main
    caption: Everything.
    columns: [test_acc, acc_gap]
figures:
  - name: error_vs_batch
    part: main
    kind: metric_vs_x
    caption: Test error vs batch.
    x: data.batch_size
    metric: test_error
    series: norm
claims:
  - id: gn_vs_bn
    statement: gn and bn differ at batch 16.
    test: {kind: difference, part: main, metric: test_error, a: {norm: gn, data.batch_size: 16},
           b: {norm: bn, data.batch_size: 16}, expect: less}
  - id: bn_mean
    statement: bn's accuracy at 32 is a probability.
    test: {kind: mean_within, part: main, metric: test_acc, select: {norm: bn, data.batch_size: 32}, low: -1, high: 2}
"""


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    return study_root(tmp_path, monkeypatch, "tiny", TINY_STUDY)


@pytest.fixture(scope="module")
def done_once(tmp_path_factory) -> Path:
    """The tiny study, run once for the module (its root)."""
    once = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:
        study_root(once, mp, "tiny", TINY_STUDY)
        assert main(["reproduce", "tiny"]) == 0
    return once


@pytest.fixture
def done(root, done_once, capsys) -> Path:
    """A copy of the tiny study's run in this test's root (tests edit its files): its results folder."""
    shutil.copytree(done_once, root, dirs_exist_ok=True)
    capsys.readouterr()
    return root / "results" / "tiny"


def test_reproduce_runs_the_study_and_writes_every_result(done, root, capsys):
    names = {p.relative_to(done).as_posix() for p in done.rglob("*") if p.is_file()}
    assert {"README.md", "table.md", "table.tex", "table_long.md", "table_long.tex", "claims.json",
            "provenance.json", "records/main.jsonl", "figures/error_vs_batch.png", "figures/error_vs_batch.pdf",
            "figures/error_vs_batch.json", "figures/manifest.json"} <= names
    lines = (done / "records" / "main.jsonl").read_text().splitlines()
    assert len(lines) == 12  # 2 norms x 2 batch sizes x 3 seeds, one line each
    rec = json.loads(lines[0])
    assert rec["state"] == "COMPLETE" and "history" in rec["summary"] and "config" in rec["summary"]
    prov = json.loads((done / "provenance.json").read_text())
    assert prov["parts"]["main"]["trials"] == 12 and prov["time"]["trial_wall_s"]["n"] == 12
    claims = {c["id"]: c for c in json.loads((done / "claims.json").read_text())}
    assert claims["bn_mean"]["verdict"] == "held" and claims["gn_vs_bn"]["verdict"] in ("held", "not held")
    readme = (done / "README.md").read_text()
    assert "## Claims" in readme and "`gn_vs_bn`" in readme
    assert "![error_vs_batch](figures/error_vs_batch.png)" in readme
    # a second run trains nothing and rewrites the same bytes
    before = {p: p.read_bytes() for p in done.rglob("*") if p.is_file()}
    assert main(["reproduce", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "[" not in out.split("wrote")[0] or "trials done" in out
    assert {p: p.read_bytes() for p in done.rglob("*") if p.is_file()} == before


def test_check_passes_on_fresh_results_and_catches_any_edit(done, capsys):
    assert main(["reproduce", "tiny", "--check"]) == 0
    assert "regenerate identically" in capsys.readouterr().out
    table = done / "table.md"
    original = table.read_text()
    table.write_text(original.replace("±", "+-", 1))
    assert main(["reproduce", "tiny", "--check"]) == 1
    assert "DIFFERS: table.md" in capsys.readouterr().out
    table.write_text(original)
    records = done / "records" / "main.jsonl"
    lines = records.read_text().splitlines()
    row = json.loads(lines[0])
    row["summary"]["test_acc"] = 0.0  # a changed measurement changes the tables and claims derived from it
    records.write_text("\n".join([json.dumps(row, sort_keys=True, separators=(",", ":")), *lines[1:]]) + "\n")
    assert main(["reproduce", "tiny", "--check"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS: table.md" in out and "DIFFERS: claims.json" in out


def test_check_and_regenerate_work_without_the_database(done, root, capsys):
    shutil.rmtree(root / "runs")  # a fresh clone has the committed records only
    assert main(["reproduce", "tiny", "--check"]) == 0
    (done / "table.md").write_text("stale\n")
    (done / "figures" / "old_figure.png").write_bytes(b"stale")
    assert main(["reproduce", "tiny", "--regenerate"]) == 0
    assert not (done / "figures" / "old_figure.png").exists()
    assert main(["reproduce", "tiny", "--check"]) == 0


def test_an_incomplete_study_writes_no_results_and_resumes(root, capsys):
    assert main(["reproduce", "tiny", "sweep.max_trials=5"]) == 1  # stopped after 5 of 12 trials
    assert "part main has 7 point(s) not finished" in capsys.readouterr().out
    assert not (root / "results").exists()
    assert main(["reproduce", "tiny"]) == 0  # resumes: only the 7 missing points run
    records = (root / "results" / "tiny" / "records" / "main.jsonl").read_text().splitlines()
    assert len(records) == 12


def test_finding_placeholders_are_filled_from_the_claims(done, capsys):
    (done / "finding.md").write_text("GN minus BN: {{gn_vs_bn.value:pp}} pp ({{gn_vs_bn.verdict}}).\n")
    assert main(["reproduce", "tiny", "--check"]) == 1  # the README now has the finding: regenerate it
    assert main(["reproduce", "tiny"]) == 0
    readme = (done / "README.md").read_text()
    claims = {c["id"]: c for c in json.loads((done / "claims.json").read_text())}
    assert f"GN minus BN: {claims['gn_vs_bn']['value'] * 100:+.1f} pp ({claims['gn_vs_bn']['verdict']})." in readme
    (done / "finding.md").write_text("{{nope.value}}\n")
    assert main(["reproduce", "tiny", "--check"]) == 2
    assert "names claim 'nope', which is not declared" in capsys.readouterr().err


def test_list_shows_questions_and_costs(done, capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "tiny: A tiny study" in out and "CPU-hours measured here (12 runs" in out


def _study(**changes) -> dict:
    import yaml

    raw = yaml.safe_load(TINY_STUDY)
    raw.update(changes)
    return raw


@pytest.mark.parametrize("changes, message", [
    ({"claim": []}, r"unknown key 'claim'; accepted: title, question"),
    ({"declared": "yesterday"}, r"'declared' must be a date YYYY-MM-DD"),
    ({"parts": {"main": {"grid": {"norm": ["bn"]}, "sampler": "tpe"}}}, r"a study runs grids"),
    ({"parts": {"main": {"grid": {"norm": ["bn"]}, "n_workers": 2}}}, r"'n_workers' is a run setting"),
    ({"claims": [{"id": "x", "statement": "s", "test": {"kind": "bigger", "part": "main"}}]},
     r"test kind 'bigger' is not accepted; accepted: difference"),
    ({"claims": [{"id": "x", "statement": "s", "test": {"kind": "difference", "part": "main", "metric": "test_acc",
                                                        "a": {"norm": "bn"}, "b": {"lr": 1}, "expect": "greater"}}]},
     r"'b' selects on 'lr', which part 'main' does not sweep"),
    ({"claims": [{"id": "x", "statement": "s", "test": {"kind": "difference", "part": "main", "metric": "test_acc",
                                                        "a": {}, "b": {}, "expect": "equivalent"}}]},
     r"expect: equivalent needs a margin > 0"),
    ({"tables": [{"name": "t", "part": "other"}]}, r"part 'other' is not declared"),
    ({"tables": [{"name": "t", "part": "main", "colums": []}]}, r"unknown key 'colums'"),
    ({"figures": [{"name": "f", "part": "main", "kind": "pie", "caption": "c"}]}, r"kind 'pie' is not accepted"),
    ({"scales": {"cpu": {}}}, r"scale 'cpu' is the file's own settings"),
])
def test_bad_study_declarations_fail_with_one_line(changes, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as e:
        parse_experiment("tiny", _study(**changes), tmp_path / "tiny.yaml")
    assert str(e.value).startswith("study tiny") and "\n" not in str(e.value)


def test_cli_errors_are_one_line_with_exit_2(root, capsys):
    assert main(["reproduce"]) == 2
    assert "needs a study; accepted: tiny" in capsys.readouterr().err
    assert main(["reproduce", "nope"]) == 2
    assert "unknown study 'nope'; accepted: tiny" in capsys.readouterr().err
    assert main(["reproduce", "tiny", "--chek"]) == 2
    assert "unknown flag '--chek'" in capsys.readouterr().err
    assert main(["reproduce", "tiny", "--check"]) == 2
    assert "no committed results for study tiny" in capsys.readouterr().err
    assert main(["reproduce", "tiny", "scale=huge"]) == 2
    assert "unknown scale 'huge'; accepted: cpu, smoke" in capsys.readouterr().err


def test_every_shipped_study_is_declared_well_and_composes():
    from normbench.sweep.plan import make_plan

    names = available()
    assert {"d2l_lenet_bn", "gn_batch_size", "ema_vs_precise", "momentum", "accumulation",
            "norm_leaderboard"} <= set(names)
    problems = []
    for name in names:
        exp = load_experiment(name)
        assert exp.claims, f"{name} declares no claim"
        for part, spec in exp.parts.items():
            assert len(spec.seeds) >= 5, f"{name}: a headline claim needs >= 5 seeds"
            try:
                make_plan(spec, [])  # every grid point composes and validates
            except ConfigError as e:
                problems.append(f"{name}/{part}: {e}")
    assert not problems, "\n".join(problems)


def test_the_leaderboard_covers_every_registered_norm():
    from normbench.norms import available as norms

    exp = load_experiment("norm_leaderboard")
    setup = next(d for d in exp.parts["main"].grid if d.label == "setup")
    assert sorted(a["norm"] for a in setup.assignments()) == sorted(norms())


COMMITTED = [n for n in available() if (Path(__file__).resolve().parents[1] / "results" / n / "records").is_dir()]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_study_regenerates_identically(name, capsys):
    assert main(["reproduce", name, "--check"]) == 0, capsys.readouterr().out
