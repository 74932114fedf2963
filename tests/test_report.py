"""Reports from a stored sweep: golden tables, exact statistics, figures, the offline dashboard, errors.

The study is built here with Optuna's own API (create_study + add_trial) in a temporary SQLite file, with
fixed values and fixed completion dates, so the tables are byte-stable. Regenerate the golden files after
an intended change with `NORMBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py`.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
from pathlib import Path

import optuna
import pytest

from normbench.cli import main
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


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the zero-spread row
def test_paired_comparison_matches_scipy_paired_t_test_and_holm(results_dir):
    from scipy import stats as sps

    from normbench.report.tables import build_table

    ref = ReportArgs(SWEEP, results_dir, None, {**TABLE_OPTIONS, "compare": "gn"})
    table = build_table(load_results(ref), ref.options)
    col = next(i for i, h in enumerate(table.headers) if h.startswith("Δ test acc (%) vs norm=gn"))
    rows = {(r[0].text, r[1].text, r[2].text): r[col] for r in table.rows}
    gn = {bs: i for i, (norm, bs, _, _) in enumerate(CONFIGS) if norm == "gn"}
    bad = (MISSING, FAILED, DIVERGED)
    raw_p, cells = [], []
    for i, (norm, bs, mom, _) in enumerate(CONFIGS):
        cell = rows[(norm, str(bs), "–" if mom is None else f"{mom:g}")]
        if norm == "gn":
            assert cell.text == "baseline"
            continue
        mine = [s for s in SEEDS if (norm, bs, mom, s) not in bad]
        base = [s for s in SEEDS if ("gn", bs, None, s) not in bad]
        a = [acc_of(i, s) * 100 for s in mine]
        b = [acc_of(gn[bs], s) * 100 for s in base]
        if set(mine) <= set(base) and len(mine) >= 2:  # every seed pairs up: paired t on the differences
            res = sps.ttest_rel(a, [acc_of(gn[bs], s) * 100 for s in mine])
            diffs = [x - y for x, y in zip(a, [acc_of(gn[bs], s) * 100 for s in mine], strict=True)]
            assert cell.method == "paired-t" and cell.n == len(mine)
            assert cell.mean == f"{statistics.mean(diffs):+.2f}"
        else:  # Welch between all finished seeds of each
            res = sps.ttest_ind(a, b, equal_var=False)
            assert cell.method == "welch" and (cell.n, cell.n_baseline) == (len(mine), len(base))
            assert cell.mean == f"{statistics.mean(a) - statistics.mean(b):+.2f}"
        if len(mine) >= 2 and len(base) >= 2:
            lo, hi = res.confidence_interval(0.95)
            assert (cell.low, cell.high) == (f"{lo:+.2f}", f"{hi:+.2f}")
            raw_p.append(float(res.pvalue))
            cells.append(cell)
    assert len(cells) >= 2
    # Holm by hand: sort, multiply the i-th smallest by m - i, running maximum, cap at 1
    order = sorted(range(len(raw_p)), key=raw_p.__getitem__)
    adj, run = [0.0] * len(raw_p), 0.0
    for rank, k in enumerate(order):
        run = max(run, min(1.0, (len(raw_p) - rank) * raw_p[k]))
        adj[k] = run
    for cell, p in zip(cells, adj, strict=True):
        assert cell.p_holm == pytest.approx(p, rel=1e-6, abs=1e-12)
        assert cell.significant == (p <= 0.05)


def test_single_seed_difference_has_no_interval_and_says_so(tmp_path):
    root = tmp_path / "r"
    (root / "one").mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="one", storage=f"sqlite:///{root / 'one' / 'study.db'}")
    for i, seeds in ((0, [0]), (4, [0, 1])):  # bn: one seed finished; gn (the baseline): two
        for seed in seeds:
            s = run_summary(i, seed)
            t = optuna.trial.create_trial(value=s["test_acc"], user_attrs={
                "params": {"norm": CONFIGS[i][0], "seed": seed}, "summary": s})
            t.datetime_complete = T0
            study.add_trial(t)
    assert main(["table", "sweep=one", f"results_dir={root}", "table.compare=gn"]) == 0
    md = (root / "one" / "table.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| bn |"))
    diff = (acc_of(0, 0) - statistics.mean([acc_of(4, 0), acc_of(4, 1)])) * 100
    assert f"| {diff:+.2f} [no CI] (1 vs 2) |" in row
    assert "_No CI: fewer than 2 values._" in md and "Welch" in md
    tex = (root / "one" / "table.tex").read_text()
    assert "[no CI] (1 vs 2)" in tex and "dagger" not in tex  # nothing to test: no guard line


def test_queued_running_and_failed_trials_are_told_apart(tmp_path):
    """A `sweep.max_trials` run leaves the rest of the grid WAITING: queued (never started), not running."""
    root = tmp_path / "r"
    (root / "q").mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="q", storage=f"sqlite:///{root / 'q' / 'study.db'}")
    states = {0: "COMPLETE", 1: "RUNNING", 2: "FAIL", 3: "WAITING", 4: "WAITING"}
    for seed, state in states.items():
        s = run_summary(4, seed)
        attrs = {"params": {"norm": "gn", "seed": seed}}
        if state == "COMPLETE":
            t = optuna.trial.create_trial(value=s["test_acc"], user_attrs={**attrs, "summary": s})
            t.datetime_complete = T0
            study.add_trial(t)
        elif state == "WAITING":
            study.enqueue_trial({}, user_attrs=attrs)
        else:
            study.add_trial(optuna.trial.create_trial(state=getattr(optuna.trial.TrialState, state),
                                                      user_attrs={**attrs, "fail_reason": "x"}))
    assert main(["table", "sweep=q", f"results_dir={root}"]) == 0
    md = (root / "q" / "table.md").read_text()
    assert "| 1/5 (failed: 2; running: 1; queued: 3, 4) |" in md
    assert "5 runs (1 ok, 1 failed, 1 running, 2 queued)" in md


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
    # (the W&B artifact is read back in test_sweep_run, with W&B's own folders in tmp_path)
    assert main(["dashboard", f"sweep={SWEEP}", f"results_dir={results_dir}", "report.artifact=false"]) == 0
    assert "W&B offline" in capsys.readouterr().out
    page = (results_dir / SWEEP / "dashboard.html").read_text()
    for title in ("Test accuracy vs batch size per norm", "Train-test gap vs batch size per norm",
                  "Calibration error vs BN momentum", "EMA vs precise-statistics test accuracy per epoch"):
        assert f"<h2>{title}</h2>" in page
    assert page.count("<svg") == 4 and "2/3 (diverged: 1)" in page


def test_dashboard_table_shows_the_comparison_like_the_markdown(results_dir):
    from normbench.report.dashboard import render_html
    from normbench.report.figures import REPORT_OPTIONS

    ref = ReportArgs(SWEEP, results_dir, None, dict(REPORT_OPTIONS))
    page = render_html(load_results(ref), ref, {**TABLE_OPTIONS, "compare": "gn"})
    md_row = (GOLDEN / "report_fixture_table.md").read_text().splitlines()[2]  # bn / 2 / 0.01: Welch, significant
    delta = md_row.split(" | ")[-2]
    assert delta.endswith("† (3 vs 2)") and f"<td class='r'>{delta}</td>" in page
    assert "Holm&#x27;s correction over the 4 differences" in page


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
                             "Δ test acc (%) vs norm=bn, BN momentum=0.1 (± 90% CI)", "seeds ok"]
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
