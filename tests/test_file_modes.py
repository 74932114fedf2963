"""Files normbench writes itself get the permissions of any new file under the umask (not the temp file's 0600)."""

from __future__ import annotations

import os
import stat

import optuna
import pytest

from normbench.cli import main
from normbench.files import write_text_atomic
from normbench.sweep.export import write_trials_csv
from normbench.train import train
from tests.test_report import SWEEP, build_study


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_run_and_report_files_follow_umask_022(umask, tiny_cfg, tmp_path, monkeypatch, capsys):
    result = train(tiny_cfg("logger=csv"))
    written = [result.out_dir / "summary.json", result.out_dir / "calibration.json"]
    assert mode(result.out_dir / "metrics.csv") == 0o644  # Lightning's own file, for comparison

    results = tmp_path / "results"
    (results / SWEEP).mkdir(parents=True)
    build_study(f"sqlite:///{results / SWEEP / 'study.db'}")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for command, *extra in (("table",), ("plot",), ("dashboard", "report.artifact=false")):
        assert main([command, f"sweep={SWEEP}", f"results_dir={results}", *extra]) == 0
    out = results / SWEEP
    study = optuna.load_study(study_name=SWEEP, storage=f"sqlite:///{out / 'study.db'}")
    written += [out / "table.md", out / "table.tex", out / "dashboard.html",
                write_trials_csv(out / "trials.csv", study.get_trials()),
                *sorted((out / "figures").glob("*.p*"))]
    assert len(written) > 8
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written} == \
        {str(p.relative_to(tmp_path)): oct(0o644) for p in written}


def test_a_stricter_umask_is_respected(umask, tmp_path):
    umask(0o077)
    assert mode(write_text_atomic(tmp_path / "a.txt", "x")) == 0o600
    umask(0o002)
    assert mode(write_text_atomic(tmp_path / "b.txt", "x")) == 0o664
