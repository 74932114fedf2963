"""The run record in an Optuna trial: split into parts no longer than the limit, read back exactly."""

from __future__ import annotations

import json

import optuna

from normbench.results import PART_LIMIT, split_json, stored_summary, summary_attrs, summary_keys


def test_parts_stay_under_the_limit_even_with_escapes_and_join_back():
    text = json.dumps({"path": "C:\\runs\\ü" * 300, "quote": '"' * 700, "x": list(range(400))})
    parts = split_json(text)
    assert "".join(parts) == text and len(parts) > 3
    assert max(len(json.dumps(p)) for p in parts) <= PART_LIMIT


def test_a_summary_round_trips_through_a_real_study(tmp_path):
    summary = {"status": "ok", "test_acc": 0.875, "val_acc": 0.5, "calib_kl": None, "wall_s": float("nan"),
               "history": [{"epoch": e, "test_acc": e / 10} for e in range(200)], "device_name": "cpu – ü"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=summary_attrs(summary, "val_acc")))
    attrs = study.get_trials()[0].user_attrs
    assert stored_summary(attrs) == {**summary, "wall_s": None}  # NaN is not JSON: null, as in summary.json
    assert attrs["metric.test_acc"] == 0.875 and attrs["metric.val_acc"] == 0.5
    assert "metric.calib_kl" not in attrs and "metric.wall_s" not in attrs
    assert set(summary_keys(attrs)) == set(attrs)


def test_old_studies_and_incomplete_records():
    assert stored_summary({"summary": {"test_acc": 0.5}}) == {"test_acc": 0.5}  # written before the parts
    attrs = summary_attrs({"test_acc": 0.5, "history": list(range(500))})
    attrs.pop("summary.1")
    assert stored_summary(attrs) is None  # a missing part: no record rather than a wrong one
    assert stored_summary({}) is None
