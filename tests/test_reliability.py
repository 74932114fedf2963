"""Issue 26 (reliability, round three), what the bad-input table cannot say: the sweep starts only as many worker
processes as it has trials to run, the oversubscription override runs, `reproduce --check` names the file, line
and field of each problem in a study's committed records (and the committed studies have none), and the storage
outage warning names its cause. The one-line refusals themselves are cases of tests/test_bad_input.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from normbench.cli import main
from normbench.errors import ConfigError
from normbench.experiments.record_check import check_records
from normbench.experiments.spec import available, load_experiment, parse_experiment, repo_root
from normbench.faults import cause_text
from normbench.resources import OVERSUBSCRIBE_PER_CORE, check_count, cpu_cores, take_override, workers_to_start
from tests.sweep_support import ONE_POINT

# ---------------------------------------------------------------------------------------------- resources


def test_counts_above_four_per_core_are_refused_unless_allowed():
    check_count("sweep.n_workers", 8, cores=2)
    check_count("trainer.threads", None, cores=2)  # null: torch's default
    with pytest.raises(ConfigError, match=r"sweep.n_workers=9 is more than 4 per CPU core \(2 core\(s\) here: at "
                                          r"most 8\); lower it, or add allow_oversubscribe=true"):
        check_count("sweep.n_workers", 9, cores=2)
    check_count("sweep.n_workers", 9, allow=True, cores=2)


def test_the_override_is_taken_from_the_command_line():
    assert take_override(["a=1", "allow_oversubscribe=true", "b=2"]) == (True, ["a=1", "b=2"])
    assert take_override(["allow_oversubscribe=False"]) == (False, [])
    assert take_override(["sweep=x"]) == (False, ["sweep=x"])
    with pytest.raises(ConfigError, match="allow_oversubscribe must be true or false, got '1'"):
        take_override(["allow_oversubscribe=1"])


def test_workers_are_bounded_by_the_trials_that_can_run():
    assert workers_to_start(1000, can_run=1) == 1
    assert workers_to_start(1000, can_run=8, max_trials=1) == 1
    assert workers_to_start(3, can_run=8, max_trials=5) == 3
    assert workers_to_start(4, can_run=0) == 1  # one finds the sweep finished (or waits for others' trials)


@pytest.fixture
def sweep_home(tmp_path, monkeypatch):
    from normbench.config import config_dir

    shutil.copytree(config_dir(), tmp_path / "configs")
    (tmp_path / "configs" / "sweep" / "tiny.yaml").write_text(ONE_POINT)
    monkeypatch.setenv("NORMBENCH_CONFIG_DIR", str(tmp_path / "configs"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_sweep_starts_one_worker_per_trial_that_can_run(sweep_home, capsys):
    """sweep.n_workers=3 with one trial to run: one worker process, one log (main started three)."""
    results = sweep_home / "results"
    code = main(["run", "sweep=tiny", f"results_dir={results}", "sweep.n_workers=3", "trainer.threads=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 worker processes (sweep.n_workers=3: one per trial that can run)" in out
    assert sorted(p.name for p in (results / "tiny" / "workers").iterdir()) == ["0.log"]
    assert "1/1 trials done" in out


def test_allow_oversubscribe_runs_what_would_be_refused(tmp_path, capsys):
    over = OVERSUBSCRIBE_PER_CORE * cpu_cores() + 1
    if over > 64:
        pytest.skip(f"{over} threads for one tiny run: too many for a test")
    run = ["run", "data=synthetic", "data.num_train=64", "data.num_test=32", "trainer.max_epochs=1",
           "trainer.progress_bar=false", "trainer.accelerator=cpu", "calib.enabled=false",
           f"out_dir={tmp_path / 'run'}", f"trainer.threads={over}"]
    assert main(run) == 2
    assert f"trainer.threads={over} is more than 4 per CPU core" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*run, "allow_oversubscribe=true"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["threads"] == over
    assert "allow_oversubscribe" not in summary["config"]  # a switch of the command, not a setting


# ---------------------------------------------------------------------------------------------- reproduce --check


@pytest.mark.parametrize("study", available())
def test_every_committed_study_has_valid_records(study):
    exp = load_experiment(study)
    assert check_records(exp, repo_root() / "results" / exp.results_name) == []


STUDY = "d2l_lenet_bn"  # 20 records, two grid cells x 10 seeds


@pytest.fixture
def records(tmp_path) -> Path:
    """A copy of the study's committed records under tmp_path/<study>/records (the results_dir is tmp_path)."""
    out = tmp_path / STUDY / "records"
    shutil.copytree(repo_root() / "results" / STUDY / "records", out)
    return out


def check_lines(tmp_path: Path, capsys) -> list[str]:
    code = main(["reproduce", STUDY, "--check", f"results_dir={tmp_path}"])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: study {STUDY}: "), err
    assert "nothing was regenerated" in err[0]
    return [line for line in captured.out.splitlines() if line.startswith("INVALID: ")]


def _edit_line(path: Path, index: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[index] = fn(lines[index])
    path.write_text("\n".join(lines) + "\n")


def test_check_names_a_wrong_type_by_file_line_and_field(records, tmp_path, capsys):
    def text_gap(line: str) -> str:
        row = json.loads(line)
        row["summary"]["acc_gap"] = "abc"
        row["summary"]["history"][1]["test_acc"] = True
        return json.dumps(row)

    _edit_line(records / "main.jsonl", 2, text_gap)
    assert check_lines(tmp_path, capsys) == [
        "INVALID: records/main.jsonl:3: summary.acc_gap: 'abc' is not number",
        "INVALID: records/main.jsonl:3: summary.history[1].test_acc: True is not number"]


def test_check_refuses_nan_and_undeclared_fields(records, tmp_path, capsys):
    def nan_gap(line: str) -> str:
        row = json.loads(line)
        row["summary"]["acc_gap"] = float("nan")
        return json.dumps(row)  # Python writes NaN; the record writer never does

    def undeclared(line: str) -> str:
        row = json.loads(line)
        row["summary"]["acc_gapp"] = 0.1
        return json.dumps(row)

    _edit_line(records / "main.jsonl", 0, nan_gap)
    _edit_line(records / "main.jsonl", 5, undeclared)
    problems = check_lines(tmp_path, capsys)
    assert problems[0] == ("INVALID: records/main.jsonl:1: not a JSON record (NaN is not JSON (a record stores a "
                           "missing or non-finite number as null))")
    assert problems[1] == "INVALID: records/main.jsonl:6: summary.acc_gapp: not declared"
    # the NaN line's point has no readable record left
    assert problems[2].startswith("INVALID: records/main.jsonl: no record for 1 declared point(s): norm=bn seed=0")


def test_check_refuses_a_duplicated_line_and_an_extra_file(records, tmp_path, capsys):
    lines = (records / "main.jsonl").read_text().splitlines()
    (records / "main.jsonl").write_text("\n".join([*lines, lines[4]]) + "\n")
    (records / "bogus.jsonl").write_text(lines[0] + "\n")
    problems = check_lines(tmp_path, capsys)
    n = len(lines) + 1
    number = json.loads(lines[4])["number"]
    assert problems[0].startswith(f"INVALID: records/bogus.jsonl: not a record file of study {STUDY} (its files: "
                                  "main.jsonl)")
    assert problems[1] == f"INVALID: records/main.jsonl:{n}: trial number {number} is already recorded on line 5"
    assert problems[2].startswith(f"INVALID: records/main.jsonl:{n}: ")
    assert f"is recorded COMPLETE 2 times (lines 5, {n}); each grid cell x seed runs once" in problems[2]


def test_check_refuses_a_binary_record_file(records, tmp_path, capsys):
    (records / "main.jsonl").write_bytes(b'{"number": 0}\n' + bytes(range(128, 256)))
    problems = check_lines(tmp_path, capsys)
    assert problems[0] == ("INVALID: records/main.jsonl:2: not UTF-8 text (byte 14); a record file is JSON lines")


def _study_root(tmp_path: Path, edit) -> Path:
    """A repository root with the study's declaration edited by `edit(text) -> text` and its committed results."""
    root = tmp_path / "root"
    (root / "experiments").mkdir(parents=True)
    text = (repo_root() / "experiments" / f"{STUDY}.yaml").read_text()
    (root / "experiments" / f"{STUDY}.yaml").write_text(edit(text))
    shutil.copytree(repo_root() / "results" / STUDY, root / "results" / STUDY)
    return root


def test_check_holds_the_records_to_the_declared_grid(tmp_path, monkeypatch, capsys):
    root = _study_root(tmp_path, lambda t: t.replace("norm: [bn, bn_scratch]", "norm: [bn, bn_scratch, gn]")
                       .replace("seeds: 10", "seeds: 9"))
    monkeypatch.setenv("NORMBENCH_ROOT", str(root))
    code = main(["reproduce", STUDY, "--check"])
    out = capsys.readouterr().out.splitlines()
    assert code == 2
    problems = [line for line in out if line.startswith("INVALID: ")]
    outside = [p for p in problems if "are not a point of the declared grid x seeds of part 'main'" in p]
    assert len(outside) == 2  # seed 9 of bn and of bn_scratch
    assert all("seed=9" in p for p in outside)
    assert problems[-1] == ("INVALID: records/main.jsonl: no record for 9 declared point(s): norm=gn seed=0; "
                            "norm=gn seed=1; norm=gn seed=2 and 6 more")


def test_a_claim_on_a_metric_no_record_holds_is_refused_at_load():
    path = repo_root() / "experiments" / f"{STUDY}.yaml"
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    raw["claims"][0]["test"]["metric"] = "nosuch_metric"
    with pytest.raises(ConfigError, match="claim 'reproduces_d2l_test'.*metric 'nosuch_metric' is not a numeric "
                                          "field of the run record"):
        parse_experiment(STUDY, raw, path)


# ---------------------------------------------------------------------------------------------- storage outage


def _raised(inner: BaseException) -> BaseException:
    """`inner` wrapped as SQLAlchemy wraps a driver's error (`raise ... from`), as a real outage delivers it."""
    from sqlalchemy import exc as sa_exc

    try:
        try:
            raise inner
        except Exception as e:
            raise sa_exc.OperationalError("SELECT 1", None, e) from e
    except sa_exc.OperationalError as outer:
        return outer


def test_the_outage_warning_names_its_cause(capsys):
    psycopg = pytest.importorskip("psycopg")
    from normbench.sweep.storage import Retrier

    Retrier("postgresql://u@127.0.0.1:1/db", patience=1)._outage(_raised(psycopg.OperationalError(())))
    err = capsys.readouterr().err
    assert "(())" not in err
    assert ("warning: storage postgresql://u@127.0.0.1:1/db unreachable (psycopg.OperationalError without a "
            "message (the connection failed or was closed)); retrying for up to 1 s") in err
    refused = psycopg.OperationalError("connection failed: connection to server at \"127.0.0.1\", port 1 failed: "
                                       "Connection refused")
    assert cause_text(_raised(refused)).endswith("port 1 failed: Connection refused")


def test_a_fault_of_the_workers_is_one_line():
    from normbench.sweep.runner import worker_faults

    full = "error: disk full: cannot write /d/results/tiny/study.db (No space left on device); nothing was damaged"
    exits = [("normbench-sweep-0", 1, full, Path("0.log")), ("normbench-sweep-1", 1, None, Path("1.log")),
             ("normbench-sweep-2", 1, full, Path("2.log"))]
    assert worker_faults(exits) == (full[len("error: "):], [])
    assert worker_faults(exits[1:2]) == (None, ["worker normbench-sweep-1 exited with code 1; see 1.log"])
