"""Replay and replicate: numerics fingerprints, record comparison, `reproduce --replay/--replicate` end to end."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from normbench.cli import main
from normbench.environment import cpu_model
from normbench.experiments import available
from normbench.experiments.replay import compare_records, flatten, verdict
from normbench.numerics import (
    NUMERICS_VERSION,
    differences,
    fingerprint,
    parse,
    record_fingerprint,
    same_numerics,
)
from tests.helpers import requires_fmnist

REPO = Path(__file__).resolve().parents[1]

TINY = """\
title: A tiny study
question: Does bn differ from gn on tiny synthetic data?
protocol: Synthetic data, one epoch, two seeds.
declared: "2026-12-03"
parts:
  main:
    description: bn and gn
    base:
      data.batch_size: 32
      trainer.threads: 1
    grid:
      norm: [bn, gn]
    seeds: 2
claims:
  - id: gn_vs_bn
    statement: gn and bn differ.
    test: {kind: difference, part: main, metric: test_error, a: {norm: gn}, b: {norm: bn}, expect: less}
  - id: bn_mean
    statement: bn's accuracy is a probability.
    test: {kind: mean_within, part: main, metric: test_acc, select: {norm: bn}, low: -1, high: 2}
"""


def _record(**changes):
    rec = {"test_acc": 0.8, "history": [{"epoch": 1, "test_acc": 0.7}, {"epoch": 2, "test_acc": 0.8}],
           "norm_groups": {"conv1": 2}, "status": "ok", "wall_s": 12.5, "created_at": "2026-11-30T10:00:00",
           "out_dir": "/a", "machine": {"cpu_model": "AMD EPYC", "cpu_count": 2},
           "versions": {"torch": "2.14.1+cu130"}, "config": {"trainer": {"deterministic": True}}, "device_name": "cpu"}
    rec.update(changes)
    return rec


# ---------------------------------------------------------------------------------------------- units


def test_flatten_names_every_leaf_and_leaves_out_time_paths_and_host():
    flat = flatten(_record())
    assert flat == {"test_acc": 0.8, "history[0].epoch": 1, "history[0].test_acc": 0.7, "history[1].epoch": 2,
                    "history[1].test_acc": 0.8, "norm_groups.conv1": 2, "status": "ok"}


def test_a_moved_field_on_the_recording_cpu_fails_naming_it_and_by_how_much():
    old = _record(numerics=fingerprint("true"))
    new = copy.deepcopy(old)
    new["history"][1]["test_acc"] = 0.8 + 2 ** -40  # one ulp-scale change is a change
    new["wall_s"], new["out_dir"], new["created_at"] = 99.0, "/tmp/b", "2026-12-03T00:00:00"  # never compared
    v = verdict("tiny main:0", old, new)
    assert v.strict and not v.ok
    assert [m.field for m in v.moved] == ["history[1].test_acc"]
    text = "\n".join(v.lines())
    assert "FAILED" in text and "history[1].test_acc" in text and "NUMERICS_VERSION" in text
    assert v.moved[0].abs == pytest.approx(2 ** -40)
    same = copy.deepcopy(old)
    assert verdict("tiny main:0", old, same).ok and "bit-identical" in verdict("t", old, same).lines()[0]


def test_on_another_cpu_or_fingerprint_the_drift_is_reported_not_failed():
    old = _record(numerics=fingerprint("true"))
    new = _record(test_acc=0.857, history=[{"epoch": 1, "test_acc": 0.72}, {"epoch": 2, "test_acc": 0.857}],
                  machine={"cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_count": 2},
                  numerics=fingerprint("true"))
    v = verdict("bc main:5", old, new)
    assert not v.strict and v.ok
    assert v.moved[0].field in ("test_acc", "history[1].test_acc") and v.moved[0].abs == pytest.approx(0.057)
    assert v.moved[0].rel == pytest.approx(0.057 / 0.8)
    head = v.lines()[0]
    assert "drift reported, not a failure" in head and "CPU model AMD EPYC -> Intel" in head
    other_torch = _record(numerics="n1/torch-2.99.0/AVX512/det", test_acc=0.81)
    v2 = verdict("x", old, other_torch)
    assert v2.ok and not v2.strict and "torch: " in v2.lines()[0]


def test_fields_the_record_lacks_are_not_compared_but_lost_ones_are():
    n, moved = compare_records(_record(), _record(chunk_steps=16))  # a field added to the record since
    assert moved == [] and n == len(flatten(_record()))
    stored = _record()
    replayed = _record()
    del replayed["norm_groups"]
    _, moved = compare_records(stored, replayed)
    assert [(m.field, m.replayed) for m in moved] == [("norm_groups.conv1", "(missing)")]


def test_the_fingerprint_of_an_old_record_is_version_1_with_its_torch():
    old = _record()  # no `numerics` field: made before it existed
    assert record_fingerprint(old) == "n1/torch-2.14.1+cu130/?/det"
    assert record_fingerprint({"config": {"trainer": {"deterministic": False}}},
                              versions={"torch": "2.5.0"}) == "n1/torch-2.5.0/?/nondet"
    here = fingerprint("true")
    assert parse(here) == {"version": str(NUMERICS_VERSION), "torch": torch.__version__,
                           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "deterministic": "det"}
    assert same_numerics(record_fingerprint(old), "n1/torch-2.14.1+cu130/AVX512/det")  # unknown matches
    assert not same_numerics(record_fingerprint(old), "n2/torch-2.14.1+cu130/AVX512/det")
    assert differences("n1/torch-2.14.1+cu130/AVX2/det", "n2/torch-2.14.1+cu130/AVX512/det") == [
        "version: 1 -> 2", "cpu_capability: AVX2 -> AVX512"]
    with pytest.raises(ValueError, match="not a numerics fingerprint"):
        parse("2.14.1")


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_once(tmp_path_factory) -> Path:
    """The tiny study at scale=smoke (synthetic data, one epoch, seeds 0 and 1), run once for the module."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "experiments").mkdir()
    (root / "experiments" / "tiny.yaml").write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NORMBENCH_ROOT", str(root))
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert main(["reproduce", "tiny", "scale=smoke"]) == 0
    return root


@pytest.fixture
def tiny(tiny_once, tmp_path, monkeypatch, capsys) -> Path:
    """A copy of the tiny study's root for one test (tests tamper with its records): its results."""
    shutil.copytree(tiny_once, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("NORMBENCH_ROOT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    capsys.readouterr()
    return tmp_path / "results" / "tiny-smoke"


def _tamper(folder: Path, fn) -> None:
    path = folder / "records" / "main.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        fn(r["summary"])
    path.write_text("".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in rows))


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_new_runs_record_their_fingerprint_and_replay_bit_identically(tiny, capsys):
    rec = json.loads((tiny / "records" / "main.jsonl").read_text().splitlines()[0])
    assert rec["summary"]["numerics"] == fingerprint("true")
    assert json.loads((tiny / "provenance.json").read_text())["numerics"] == [fingerprint("true")]
    before = _snapshot(tiny)
    assert main(["reproduce", "tiny", "scale=smoke", "--replay", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("bit-identical") == 2 and "2 trial(s) replayed, 0 failed" in out
    assert _snapshot(tiny) == before  # results/ untouched
    assert main(["reproduce", "tiny", "scale=smoke", "--replay", "trial=main:3"]) == 0
    out = capsys.readouterr().out
    assert "replay tiny main:3 (" in out and "bit-identical" in out and "1 trial(s) replayed, 0 failed" in out


def test_replay_fails_on_moved_numbers_here_and_reports_drift_from_another_cpu(tiny, capsys):
    _tamper(tiny, lambda s: s.update(test_loss=s["test_loss"] + 1e-9))  # as if the code had moved it
    assert main(["reproduce", "tiny", "scale=smoke", "--replay", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 of" in out and "moved test_loss:" in out and "must bump NUMERICS_VERSION" in out
    _tamper(tiny, lambda s: s["machine"].update(cpu_model="Some Other CPU"))
    assert main(["reproduce", "tiny", "scale=smoke", "--replay", "1"]) == 0
    out = capsys.readouterr().out
    assert "drift reported, not a failure (CPU model Some Other CPU -> " in out and "largest: test_loss" in out
    _tamper(tiny, lambda s: s["machine"].update(cpu_model=cpu_model()) or s.update(numerics="n0/torch-0/?/det"))
    assert main(["reproduce", "tiny", "scale=smoke", "--replay", "1"]) == 0
    assert "numerics fingerprint n0/torch-0/?/det -> " in capsys.readouterr().out


def test_replicate_re_runs_arms_and_reports_each_verdict_and_the_shift(tiny, tmp_path, capsys):
    before = _snapshot(tiny)
    out_dir = tmp_path / "rep"
    assert main(["reproduce", "tiny", "scale=smoke", "--replicate", "arms=norm=gn", f"work_dir={out_dir}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": running") == 2 and "2 of 2 verdicts stand" in printed
    report = json.loads((out_dir / "replicate.json").read_text())
    assert report["trials"] == 2 and report["arms"] == {"norm": "gn"} and report["cpu_model"] == cpu_model()
    assert report["bit_identical"] == 2
    assert [(c["id"], c["stands"]) for c in report["claims"]] == [("gn_vs_bn", True), ("bn_mean", True)]
    (arm,) = report["arm_shifts"]
    assert arm["arm"] == {"norm": "gn"}
    by_metric = {s["metric"]: s for s in arm["shifts"]}
    assert set(by_metric) == {"test_error", "test_acc"}
    # same CPU, same code: the replicated runs are the committed ones bit for bit, so the shift is exactly 0
    assert by_metric["test_error"]["shift"] == 0.0 and by_metric["test_error"]["n_paired"] == 2
    assert by_metric["test_error"]["committed_std"] == by_metric["test_error"]["new_std"]
    md = (out_dir / "replicate.md").read_text()
    assert "| `gn_vs_bn` |" in md and "## Shift per arm" in md
    assert len((out_dir / "records" / "main.jsonl").read_text().splitlines()) == 2
    assert report["entry"]["cpu_model"] == cpu_model() and report["entry"]["verdicts_stand"] == 2
    assert _snapshot(tiny) == before
    # resumable: the runs already there are not trained again
    assert main(["reproduce", "tiny", "scale=smoke", "--replicate", "arms=norm=gn", f"work_dir={out_dir}"]) == 0
    assert capsys.readouterr().out.count("already replicated") == 2
    # committed numbers the replication does not find (here: made up) flip the verdict that rests on them
    _tamper(tiny, lambda s: s.update(test_acc=5.0) if s["norm"] == "bn" else None)
    assert main(["reproduce", "tiny", "scale=smoke", "--replicate", "arms=norm=bn", f"work_dir={tmp_path / 'r2'}"]) == 0
    report = json.loads((tmp_path / "r2" / "replicate.json").read_text())
    claims = {c["id"]: c for c in report["claims"]}
    assert (claims["bn_mean"]["before"], claims["bn_mean"]["after"], claims["bn_mean"]["stands"]) == (
        "not held", "held", False)
    assert report["entry"]["flipped"] == ["bn_mean: not held -> held"]
    shift = {s["metric"]: s for s in report["arm_shifts"][0]["shifts"]}["test_acc"]
    assert shift["shift"] < -4 and shift["n_paired"] == 2 and shift["committed_std"] == 0.0
    assert shift["shift_over_std"] is None


def test_the_readme_lists_the_committed_replications(tiny, tmp_path, capsys):
    out_dir = tmp_path / "rep"
    assert main(["reproduce", "tiny", "scale=smoke", "--replicate", "arms=norm=gn", f"work_dir={out_dir}"]) == 0
    entry = json.loads((out_dir / "replicate.json").read_text())["entry"]
    (tiny / "replications.json").write_text(json.dumps([entry]))
    assert main(["reproduce", "tiny", "scale=smoke", "--regenerate"]) == 0
    readme = (tiny / "README.md").read_text()
    assert f"- replicated on: {cpu_model()} (" in readme
    assert "arms norm=gn, 2 runs, 2 bit-identical to the records: 2 of 2 verdicts stand" in readme
    capsys.readouterr()
    assert main(["reproduce", "tiny", "scale=smoke", "--check"]) == 0  # an input, like finding.md


@pytest.mark.parametrize("args, message", [
    (["--replay", "0"], "--replay N: N must be an integer >= 1, got 0"),
    (["--replay", "trial=nope:3"], "trial=nope:3: no part 'nope'; parts: main"),
    (["--replay", "trial=main:x"], "the trial number must be an integer"),
    (["--replay", "trial=main:99"], "trial=main:99: no committed record with a config"),
    (["--replay", "arms=norm=gn"], "--replay takes trial, work_dir (and scale=, results_dir=), not arms"),
    (["--replicate", "arms=colour=red"], "arms: part 'main' of study tiny has no swept key 'colour'; accepted: norm"),
    (["--replicate", "arms=norm=ln"], "arms: norm=ln matches no arm; accepted: bn, gn"),
    (["--replicate", "arms=norm"], "each selector is KEY=VALUE"),
    (["--replicate", "sweep.n_workers=2"], "it takes no sweep.n_workers"),
    (["trial=main:1"], "trial= goes with --replay"),
])
def test_bad_arguments_fail_before_any_work_with_one_line(tiny, args, message, capsys):
    assert main(["reproduce", "tiny", "scale=smoke", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_replays_never_write_under_results(tiny, capsys):
    assert main(["reproduce", "tiny", "scale=smoke", "--replay", f"work_dir={tiny / 'x'}"]) == 2
    assert "never write there" in capsys.readouterr().err and not (tiny / "x").exists()


# ---------------------------------------------------------------------------------------------- committed


COMMITTED = [n for n in available() if (REPO / "results" / n / "records").is_dir()]
JOBS = int(os.environ.get("NORMBENCH_REPLAY_JOBS", "2"))  # two at a time: the CI machine's 2 cores


@pytest.mark.replay
@requires_fmnist
def test_every_committed_study_replays_its_shortest_trial(tmp_path):
    """`reproduce STUDY --replay 1` passes for every committed study on this machine, whatever its CPU:
    bit-identical on the recording CPU model and fingerprint, a drift report elsewhere."""
    assert len(COMMITTED) >= 7
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NORMBENCH_ROOT": str(REPO)}
    pending, running, done = list(COMMITTED), [], {}
    start = time.perf_counter()
    while pending or running:
        while pending and len(running) < JOBS:
            name = pending.pop(0)
            log = (tmp_path / f"{name}.log").open("w")
            proc = subprocess.Popen([sys.executable, "-m", "normbench", "reproduce", name, "--replay", "1"],
                                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, proc, log, time.perf_counter()))
        time.sleep(0.5)
        for item in list(running):
            name, proc, log, began = item
            if proc.poll() is not None:
                log.close()
                done[name] = (proc.returncode, (tmp_path / f"{name}.log").read_text())
                running.remove(item)
                print(f"{name}: exit {proc.returncode} after {time.perf_counter() - began:.0f} s; "
                      + " | ".join(line[:300] for line in done[name][1].splitlines() if line.startswith("replay ")))
    print(f"replayed {len(done)} studies, {JOBS} at a time, in {time.perf_counter() - start:.0f} s")
    for name, (code, out) in done.items():
        assert code == 0, f"{name}:\n{out[-3000:]}"
        assert "bit-identical" in out or "drift reported, not a failure" in out, f"{name}:\n{out[-3000:]}"
