"""Reports from a stored sweep: golden tables, exact statistics, figures, the offline dashboard, errors.

The study is built here with Optuna's own API (create_study + add_trial) in a temporary SQLite file, with
fixed values and fixed completion dates, so the tables are byte-stable. Regenerate the golden files after
an intended change with `NORMBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import statistics
from pathlib import Path

import numpy as np
import optuna
import pytest

from normbench.cli import main
from normbench.report.stats import bootstrap_ci, bootstrap_distribution
from normbench.report.study import ReportArgs, load_results
from normbench.report.tables import TABLE_OPTIONS

GOLDEN = Path(__file__).parent / "golden"
SWEEP = "report_fixture"  # no configs/sweep/ file has this name: the table uses its defaults
SEEDS = [0, 1, 2]
CONFIGS = [  # norm, batch size, BN momentum, base test accuracy
    ("bn", 2, 0.01, 0.70), ("bn", 2, 0.1, 0.62), ("bn", 32, 0.01, 0.86), ("bn", 32, 0.1, 0.88),
    ("gn", 2, None, 0.84), ("gn", 32, None, 0.85),
]
MISSING = ("bn", 32, 0.1, 2)  # never ran
FAILED = ("gn", 2, None, 2)  # FAIL trial
DIVERGED = ("bn", 2, 0.1, 1)  # COMPLETE, status diverged
RETRIED = ("gn", 32, None, 0)  # a FAIL trial, then a COMPLETE retry
T0 = dt.datetime(2026, 3, 14, 9, 26, 0)


def acc_of(i: int, seed: int) -> float:
    base = CONFIGS[i][3]
    return round(base + 0.002 * ((3 * seed + 2 * i) % 5 - 2), 6)  # fixed seed noise that differs per config


def run_summary(i: int, seed: int, epochs: int = 3) -> dict:
    norm, bs, mom, _ = CONFIGS[i]
    acc = acc_of(i, seed)
    train = round(acc + 0.02 + 0.001 * seed, 6)
    hist = []
    for e in range(1, epochs + 1):
        ema = round(acc - 0.05 * (epochs - e) - (0.03 if norm == "bn" and bs == 2 else 0.0), 6)
        rec = {"epoch": e, "test_acc": ema, "train_acc": round(ema + 0.02, 6)}
        if norm == "bn":
            rec["test_acc_precise"] = round(ema + (0.04 if bs == 2 else 0.005), 6)
        hist.append(rec)
    s = {"status": "ok", "test_acc": acc, "train_acc": train, "acc_gap": round(train - acc, 6),
         "examples_per_sec": 1000.0 * bs ** 0.5 + 10 * seed, "history": hist, "seed": seed,
         "git_sha": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False,
         "config": {"seed": seed, "out_dir": f"trials/{i}-{seed}", "norm": {"name": norm, "momentum": mom},
                    "data": {"batch_size": bs}, "trainer": {"max_epochs": epochs}}}
    if norm == "bn":
        s["test_acc_precise"] = hist[-1]["test_acc_precise"]
        s["test_acc_ema"] = acc
        s["calib_kl"] = round(0.5 * mom / bs + 0.001 * seed, 6)
        s["calib_mean_rel_err"] = round(mom * 2 / bs ** 0.5 + 0.002 * seed, 6)
    return s


def build_study(storage: str, sweep: str = SWEEP) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=sweep, storage=storage, direction="maximize")
    n = 0

    def add(state, attrs, value=None):
        nonlocal n
        t = optuna.trial.create_trial(state=state, value=value, user_attrs=attrs)
        t.datetime_start = T0 + dt.timedelta(minutes=n)
        t.datetime_complete = t.datetime_start + dt.timedelta(seconds=30)
        study.add_trial(t)
        n += 1

    for i, (norm, bs, mom, _) in enumerate(CONFIGS):
        for seed in SEEDS:
            key = (norm, bs, mom, seed)
            params = {"norm": norm, "data.batch_size": bs, "norm.momentum": mom, "seed": seed}
            attrs = {"params": params, "config_id": f"{norm}-{bs}-{mom}", "run_dir": f"trials/{n}"}
            if key == MISSING:
                continue
            if key in (FAILED, RETRIED):
                add(optuna.trial.TrialState.FAIL, {**attrs, "fail_reason": "RuntimeError: out of memory"})
                if key == FAILED:
                    continue
            summary = run_summary(i, seed)
            if key == DIVERGED:
                summary["status"] = "diverged"
            add(optuna.trial.TrialState.COMPLETE, {**attrs, "summary": summary}, summary["test_acc"])


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    (root / SWEEP).mkdir(parents=True)
    build_study(f"sqlite:///{root / SWEEP / 'study.db'}")
    return root


def check_golden(path: Path, name: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("NORMBENCH_UPDATE_GOLDEN"):
        golden.write_bytes(path.read_bytes())
    assert path.read_bytes() == golden.read_bytes(), f"{path} differs from {golden}"


# ---------------------------------------------------------------- tables


def test_table_golden_and_byte_identical_regeneration(results_dir, capsys):
    args = ["table", f"sweep={SWEEP}", f"results_dir={results_dir}", "table.compare=gn"]
    assert main(args) == 0
    out = results_dir / SWEEP
    check_golden(out / "table.md", "report_fixture_table.md")
    check_golden(out / "table.tex", "report_fixture_table.tex")
    first = {p: (out / p).read_bytes() for p in ("table.md", "table.tex")}
    assert main(args) == 0  # regenerating from the same study gives the same bytes
    assert {p: (out / p).read_bytes() for p in first} == first
    assert "wrote" in capsys.readouterr().out


def test_cells_match_statistics_computed_independently(results_dir):
    from normbench.report.tables import build_table

    ref = ReportArgs(SWEEP, results_dir, None, dict(TABLE_OPTIONS))
    table = build_table(load_results(ref), ref.options)
    col = table.headers.index("test acc (%)")
    seeds_col = table.headers.index("seeds ok")
    rows = {(r[0].text, r[1].text, r[2].text): r for r in table.rows}
    for i, (norm, bs, mom, _) in enumerate(CONFIGS):
        ok = [s for s in SEEDS if (norm, bs, mom, s) not in (MISSING, FAILED, DIVERGED)]
        vals = [acc_of(i, s) * 100 for s in ok]
        row = rows[(norm, str(bs), "–" if mom is None else f"{mom:g}")]
        cell = row[col]
        assert (cell.mean, cell.std, cell.n) == (f"{statistics.mean(vals):.2f}", f"{statistics.stdev(vals):.2f}",
                                                 len(ok))
        assert row[seeds_col].text.startswith(f"{len(ok)}/3")
    # the best (highest) mean test accuracy is bold, and only it
    best = max(range(len(CONFIGS)), key=lambda i: statistics.mean(
        acc_of(i, s) for s in SEEDS if (*CONFIGS[i][:3], s) not in (MISSING, FAILED, DIVERGED)))
    bold = [r for r in table.rows if r[col].bold]
    assert len(bold) == 1 and bold[0][0].text == CONFIGS[best][0] and bold[0][1].text == str(CONFIGS[best][1])
    assert rows[("bn", "2", "0.1")][seeds_col].text == "2/3 (diverged: 1)"
    assert rows[("bn", "32", "0.1")][seeds_col].text == "2/3 (missing: 2)"
    assert rows[("gn", "2", "–")][seeds_col].text == "2/3 (failed: 2)"
    assert rows[("gn", "32", "–")][seeds_col].text == "3/3"  # the failed attempt was retried


def brute_force_ci(diffs: list[float], level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap by listing all n**n equally likely resamples (independent of the composition count)."""
    n = len(diffs)
    means = sorted(sum(r) / n for r in itertools.product(diffs, repeat=n))
    k_lo = next(k for k in range(len(means)) if (k + 1) / len(means) >= (1 - level) / 2 - 1e-12)
    k_hi = next(k for k in range(len(means)) if (k + 1) / len(means) >= 1 - (1 - level) / 2 - 1e-12)
    return means[k_lo], means[k_hi]


def test_paired_comparison_matches_brute_force_bootstrap(results_dir):
    from normbench.report.tables import build_table

    ref = ReportArgs(SWEEP, results_dir, None, {**TABLE_OPTIONS, "compare": "gn"})
    table = build_table(load_results(ref), ref.options)
    col = next(i for i, h in enumerate(table.headers) if h.startswith("Δ test acc (%) vs norm=gn"))
    rows = {(r[0].text, r[1].text, r[2].text): r[col] for r in table.rows}
    gn = {bs: i for i, (norm, bs, _, _) in enumerate(CONFIGS) if norm == "gn"}
    for i, (norm, bs, mom, _) in enumerate(CONFIGS):
        cell = rows[(norm, str(bs), "–" if mom is None else f"{mom:g}")]
        if norm == "gn":
            assert cell.text == "baseline"
            continue
        bad = (MISSING, FAILED, DIVERGED)
        seeds = [s for s in SEEDS if (norm, bs, mom, s) not in bad and ("gn", bs, None, s) not in bad]
        diffs = [(acc_of(i, s) - acc_of(gn[bs], s)) * 100 for s in seeds]
        assert cell.mean == f"{statistics.mean(diffs):+.2f}" and cell.n == len(seeds)
        if len(seeds) > 1:
            lo, hi = brute_force_ci(diffs)
            assert (cell.low, cell.high) == (f"{lo:+.2f}", f"{hi:+.2f}")
        else:
            assert cell.low is None


def test_bootstrap_exact_distribution_against_closed_forms():
    means, probs = bootstrap_distribution([1.0, 3.0])  # resamples {1,1}, {1,3} twice, {3,3}
    np.testing.assert_allclose(means, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(probs, [0.25, 0.5, 0.25])
    x = [0.3, -0.1, 0.5, 0.2]
    means, probs = bootstrap_distribution(x)
    assert probs.sum() == pytest.approx(1.0)
    assert float(means @ probs) == pytest.approx(np.mean(x))  # the bootstrap mean is unbiased for the mean
    assert float(((means - np.mean(x)) ** 2) @ probs) == pytest.approx(np.var(x) / len(x))  # its variance
    ci = bootstrap_ci(x)
    assert (ci.low, ci.high) == pytest.approx(brute_force_ci(x))


def test_bootstrap_monte_carlo_path_is_deterministic_and_close_to_exact():
    x = list(np.linspace(-1.0, 2.0, 11))  # n = 11 > EXACT_MAX_N: Monte Carlo with a fixed seed
    a, b = bootstrap_ci(x), bootstrap_ci(x)
    assert a == b
    means, probs = bootstrap_distribution(x)  # exact, slower, as the reference
    cdf = np.cumsum(probs)
    lo, hi = means[np.searchsorted(cdf, 0.025)], means[np.searchsorted(cdf, 0.975)]
    step = 3 / 10 / 11  # resample means lie on a grid of this spacing: allow one step of Monte Carlo noise
    assert a.low == pytest.approx(lo, abs=step * 1.01) and a.high == pytest.approx(hi, abs=step * 1.01)


def test_default_columns_not_recorded_are_left_out_and_named(tmp_path):
    root = tmp_path / "r"
    (root / "plain").mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{root / 'plain' / 'study.db'}")
    for seed in (0, 1):
        s = run_summary(4, seed)  # a GN run: no calibration fields
        t = optuna.trial.create_trial(value=s["test_acc"], user_attrs={"params": {"norm": "gn", "seed": seed},
                                                                       "summary": s})
        t.datetime_complete = T0
        study.add_trial(t)
    assert main(["table", "sweep=plain", f"results_dir={root}"]) == 0
    md = (root / "plain" / "table.md").read_text()
    assert "calib. KL" not in md and "Not recorded by any run: test_acc_precise, calib_kl." in md
    assert "results of 2026-03-14 09:26" in md and "1 configuration × 2 seeds = 2 runs (2 ok)" in md


# ---------------------------------------------------------------- errors


def test_missing_study_names_the_sweep_and_the_storage(tmp_path, capsys):
    assert main(["table", "sweep=nosuch", f"results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    expected = f"sqlite:///{(tmp_path / 'nosuch' / 'study.db').resolve()}"
    assert err.startswith("error: no results for sweep 'nosuch'") and expected in err
    assert not (tmp_path / "nosuch").exists()  # looking did not create an empty database


def test_study_absent_from_an_existing_storage(results_dir, capsys):
    url = f"sqlite:///{results_dir / SWEEP / 'study.db'}"
    assert main(["plot", "sweep=other", f"sweep.storage={url}"]) == 2
    err = capsys.readouterr().err
    assert "no study 'other'" in err and url in err and f"studies there: {SWEEP}" in err


@pytest.mark.parametrize("args, needle", [
    (["table"], "needs sweep=NAME"),
    (["table", "sweep=x", "table.colour=red"], "unknown key 'table.colour'"),
    (["plot", "sweep=x", "verbose"], "takes key=value arguments"),
])
def test_bad_arguments_exit_2(args, needle, capsys):
    assert main(args) == 2
    assert needle in capsys.readouterr().err


def test_compare_with_unknown_baseline(results_dir, capsys):
    assert main(["table", f"sweep={SWEEP}", f"results_dir={results_dir}", "table.compare=xn"]) == 2
    assert "no configuration of sweep 'report_fixture' has norm=xn; values: bn, gn" in capsys.readouterr().err


# ---------------------------------------------------------------- figures and dashboard


def test_plot_writes_valid_png_and_pdf(results_dir, capsys):
    from PIL import Image

    assert main(["plot", f"sweep={SWEEP}", f"results_dir={results_dir}"]) == 0
    figdir = results_dir / SWEEP / "figures"
    for name in ("acc_vs_batch", "gap_vs_batch", "calib_vs_momentum", "ema_vs_precise"):
        with Image.open(figdir / f"{name}.png") as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 500
        pdf = (figdir / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    png = (figdir / "acc_vs_batch.png").read_bytes()
    assert main(["plot", f"sweep={SWEEP}", f"results_dir={results_dir}", "report.figures=[acc_vs_batch]",
                 "report.formats=[png]"]) == 0
    assert (figdir / "acc_vs_batch.png").read_bytes() == png  # no timestamps in the files


def test_plot_skips_figures_the_sweep_cannot_draw(tmp_path, capsys):
    root = tmp_path / "r"
    (root / "gnonly").mkdir(parents=True)
    build_study(f"sqlite:///{root / 'gnonly' / 'study.db'}", "gnonly")
    storage = f"sqlite:///{root / 'gnonly' / 'study.db'}"
    # Only the GN rows: no momentum values and no precise-statistics histories.
    study = optuna.load_study(study_name="gnonly", storage=storage)
    keep = [t for t in study.get_trials() if t.user_attrs["params"]["norm"] == "gn"]
    optuna.delete_study(study_name="gnonly", storage=storage)
    fresh = optuna.create_study(study_name="gnonly", storage=storage)
    fresh.add_trials(keep)
    assert main(["plot", "sweep=gnonly", f"results_dir={root}", "report.formats=[png]"]) == 0
    out = capsys.readouterr().out
    assert "skipped calib_vs_momentum: no finished run recorded calib_mean_rel_err" in out
    assert "skipped ema_vs_precise: no run recorded test_acc_precise per epoch" in out
    assert (root / "gnonly" / "figures" / "acc_vs_batch.png").is_file()


def test_dashboard_offline_writes_the_panels_as_html(results_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["dashboard", f"sweep={SWEEP}", f"results_dir={results_dir}"]) == 0
    assert "W&B offline" in capsys.readouterr().out
    page = (results_dir / SWEEP / "dashboard.html").read_text()
    for title in ("Test accuracy vs batch size per norm", "Train-test gap vs batch size per norm",
                  "Calibration error vs BN momentum", "EMA vs precise-statistics test accuracy per epoch"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("<svg") == 4 and "2/3 (diverged: 1)" in page


def test_wandb_report_object_has_the_panels(results_dir):
    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    from normbench.report.dashboard import build_wandb_report
    from normbench.report.figures import REPORT_OPTIONS

    ref = ReportArgs(SWEEP, results_dir, None, dict(REPORT_OPTIONS))
    report = build_wandb_report(load_results(ref), ref, entity="someone")
    grid = next(b for b in report.blocks if isinstance(b, wr.PanelGrid))
    assert [p.title for p in grid.panels][:2] == ["Test accuracy vs batch size per norm",
                                                  "Train-test gap vs batch size per norm"]
    assert [type(p).__name__ for p in grid.panels] == ["ScatterPlot", "ScatterPlot", "ScatterPlot", "LinePlot"]
    assert grid.panels[0].x == wr.Config("data.batch_size") and grid.panels[0].y == wr.SummaryMetric("test_acc")
    (runset,) = grid.runsets
    assert runset.filters == f"Metric(\"Group\") == '{SWEEP}'" and runset.groupby == ["config.norm.name"]
    # (Serialising the spec needs a W&B server: Runset._to_model looks the project up.)


def test_sweep_file_table_section_and_cli_overrides(results_dir, tmp_path, monkeypatch):
    import shutil

    from normbench.config import config_dir
    from normbench.report.tables import build_table

    configs = tmp_path / "configs"
    shutil.copytree(config_dir(), configs)
    (configs / "sweep").mkdir(exist_ok=True)
    (configs / "sweep" / f"{SWEEP}.yaml").write_text(
        "table:\n"
        "  columns: [test_acc, {key: calib_kl, label: KL, digits: 5}]\n"
        "  compare: {norm: bn, norm.momentum: 0.1}\n"
        "  labels: {data.batch_size: B}\n")
    monkeypatch.setenv("NORMBENCH_CONFIG_DIR", str(configs))
    from normbench.report.study import parse_report_args

    ref = parse_report_args([f"sweep={SWEEP}", f"results_dir={results_dir}", "table.level=0.9"], "table", "table",
                            TABLE_OPTIONS)
    assert ref.options["compare"] == {"norm": "bn", "norm.momentum": 0.1} and ref.options["level"] == 0.9
    table = build_table(load_results(ref), ref.options)
    assert table.headers == ["norm", "B", "BN momentum", "test acc (%)", "KL",
                             "Δ test acc (%) vs norm=bn, BN momentum=0.1 [90% CI]", "seeds ok"]
    rows = {(r[0].text, r[1].text, r[2].text): r for r in table.rows}
    assert rows[("bn", "2", "0.1")][5].text == "baseline"
    kl = [run_summary(0, s)["calib_kl"] for s in SEEDS]
    assert rows[("bn", "2", "0.01")][4].mean == f"{statistics.mean(kl):.5f}"  # 5 digits, from the sweep file
    assert rows[("gn", "2", "–")][5].kind == "delta"  # GN's null momentum matches the pinned baseline
    (configs / "sweep" / f"{SWEEP}.yaml").write_text("table:\n  colour: red\n")
    with pytest.raises(ValueError, match="unknown key 'table.colour' in configs/sweep/report_fixture.yaml"):
        parse_report_args([f"sweep={SWEEP}"], "table", "table", TABLE_OPTIONS)


PG = os.environ.get("NORMBENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:55432")


@pytest.fixture
def pg_storage():
    """A fresh database on the local PostgreSQL of .ci/start-postgres (skipped when none runs)."""
    psycopg = pytest.importorskip("psycopg")
    admin = PG.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    name = f"normbench_report_{os.getpid()}"
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:55432 (start one with .ci/start-postgres)")
    with conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG}/{name}"
    import sqlalchemy

    sqlalchemy.orm.close_all_sessions()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_table_from_a_postgresql_study_matches_the_sqlite_golden(pg_storage, tmp_path, capsys):
    build_study(pg_storage)
    assert main(["table", f"sweep={SWEEP}", f"results_dir={tmp_path}", f"sweep.storage={pg_storage}",
                 "table.compare=gn"]) == 0
    assert (tmp_path / SWEEP / "table.md").read_bytes() == (GOLDEN / "report_fixture_table.md").read_bytes()
    assert main(["table", "sweep=absent", f"sweep.storage={pg_storage}"]) == 2
    err = capsys.readouterr().err
    assert "no study 'absent' in storage postgresql+psycopg://postgres@127.0.0.1:55432/" in err
