"""The run record has one typed definition (normbench.record): every key a run writes is declared there, the
committed records of older code fit it, and the readers (sweep, reports, W&B, README) name declared fields."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from normbench import record
from normbench.sweep.fixed_fields import FixedFields
from normbench.sweep.pruning import PruningCallback
from normbench.train import train

REPO = Path(__file__).resolve().parents[1]


def test_every_key_a_run_writes_is_declared(tiny_cfg):
    """Every field of summary.json and of each history entry, with every optional part switched on."""
    study = optuna.create_study(direction="maximize")
    pruning = PruningCallback(study.ask(), "val_acc", prune=False)
    cfg = tiny_cfg("trainer.max_epochs=2", "data.val_fraction=0.25", "calib.recalibrate=true",
                   "calib.precise_test_every_epoch=true")
    # a study's final run after per-arm tuning: what the tuning chose (normbench.experiments.tuning)
    tuned = FixedFields({"tuned": {"optim.lr": 0.5}, "tuning_trials": 6, "tuning_study": "s-main-tune-bn"})
    result = train(cfg, callbacks=[pruning, tuned])
    written = json.loads((result.out_dir / "summary.json").read_text())
    assert record.problems(written) == []
    assert {"val_acc", "train_acc_ema", "pruned_at_epoch", "test_acc_precise"} <= set(written)
    assert {"val_acc", "test_acc_precise", "calib_kl"} <= set(written["history"][-1])
    # every top-level field is written by every run (some null), except those that only apply sometimes
    assert set(record.names(run=True)) <= set(written)


def test_a_diverged_run_writes_declared_keys(tiny_cfg):
    s = train(tiny_cfg("norm=none", "model.act=relu", "optim.lr=1e6", "trainer.max_epochs=2")).summary
    assert s["status"] == "diverged"
    assert record.problems(s) == []


def test_committed_records_of_older_code_fit_the_definition():
    rows = [json.loads(line) for path in sorted(REPO.glob("results/*/records/*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]
    summaries = [r["summary"] for r in rows if r["summary"]]
    assert summaries, "no committed records under results/"
    for s in summaries:
        assert record.problems(s) == [], s.get("out_dir")


def test_undeclared_and_mistyped_fields_are_found():
    bad = {"test_acc": "high", "test_accuracy": 0.9, "history": [{"epoch": 1, "calib_samples": 8}],
           "seed": True, "epochs": 2.5, "wall_s": float("nan")}
    assert record.problems(bad) == [
        "test_acc: 'high' is not number", "test_accuracy: not declared", "seed: True is not integer",
        "epochs: 2.5 is not integer", "history[0].calib_samples: not declared as per_epoch"]


def test_readers_name_declared_fields():
    from normbench.report.console import ROWS
    from normbench.report.table_model import DEFAULT_COLUMNS, KNOWN_COLUMNS
    from normbench.results import HEADLINE
    from normbench.sweep.plan import PER_EPOCH
    from normbench.training.callbacks import FINAL_KEYS
    from normbench.training.measurements import FINAL_LOGGED, PRECISE_KEYS, RUN_CONSTANTS, SUMMARY_KEYS
    from normbench.training.wandb import _NOT_SCALAR

    declared = set(record.BY_NAME)
    for names in (KNOWN_COLUMNS, DEFAULT_COLUMNS, [k for k, _, _ in ROWS], HEADLINE, PER_EPOCH, FINAL_KEYS,
                  SUMMARY_KEYS, FINAL_LOGGED, RUN_CONSTANTS, PRECISE_KEYS, _NOT_SCALAR):
        assert set(names) <= declared, set(names) - declared
    assert set(PRECISE_KEYS) <= set(record.names(per_epoch=True))
    assert set(RUN_CONSTANTS) == {"calib_layers", "calib_samples", "calib_left_out"}
    assert set(PER_EPOCH) == {"val_acc", "val_loss", "train_acc", "train_loss", "train_acc_running",
                              "train_loss_running"}


def test_readme_record_table_is_generated_from_the_definition():
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- record table: python -m normbench.record -->\n", "<!-- end of record table -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == record.markdown_table(), "README's record table is stale: python -m normbench.record prints it"
