"""A trial's run record in the Optuna study, stored whole and read back the same.

The summary record is several KB (history, config, versions). It is stored as its JSON text split into
parts (`summary.0`, `summary.1`, ...; `summary_parts` = how many) whose stored form (Optuna JSON-encodes
each attribute) stays under `PART_LIMIT` characters, so neither a storage backend nor a viewer that limits
one attribute's size can cut it. The headline metrics are also stored as numeric attributes
(`metric.test_acc`, ...) that optuna-dashboard can sort and plot. `stored_summary` reads the record back
(also from studies written before, which hold it whole as `summary`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from normbench.records import finite_or_none

PART_LIMIT = 1000  # characters of one part as stored (JSON-encoded, with quotes and escapes)
PARTS_KEY = "summary_parts"
PART_PREFIX = "summary."
LEGACY_KEY = "summary"
METRIC_PREFIX = "metric."
# Summary fields also stored as numeric user attributes (with the sweep's objective).
HEADLINE = ("test_acc", "val_acc", "train_acc", "acc_gap", "test_loss", "val_loss", "train_loss", "test_acc_ema",
            "test_acc_precise", "precise_gain", "test_acc_batch", "test_acc_adabn", "test_acc_weighted",
            "train_acc_batch", "calib_kl", "test_ece",
            "examples_per_sec", "wall_s", "epochs")


def split_json(text: str, limit: int = PART_LIMIT) -> list[str]:
    """`text` cut into consecutive parts, each at most `limit` characters once JSON-encoded."""
    parts, current, size = [], [], 2  # the two quotes
    for ch in text:
        cost = len(json.dumps(ch)) - 2
        if size + cost > limit:
            parts.append("".join(current))
            current, size = [], 2
        current.append(ch)
        size += cost
    parts.append("".join(current))
    return parts


def summary_attrs(summary: Mapping[str, Any], objective: str | None = None) -> dict[str, Any]:
    """The user attributes that store `summary`: its parts, their count and the headline metrics."""
    text = json.dumps(finite_or_none(dict(summary)), allow_nan=False, separators=(",", ":"))
    parts = split_json(text)
    attrs: dict[str, Any] = {f"{PART_PREFIX}{i}": part for i, part in enumerate(parts)}
    attrs[PARTS_KEY] = len(parts)
    for key in dict.fromkeys((*HEADLINE, *([objective] if objective else []))):
        value = summary.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            attrs[f"{METRIC_PREFIX}{key}"] = float(value)
    return attrs


def store_summary(trial: Any, summary: Mapping[str, Any], objective: str | None = None) -> None:
    """Stores `summary` in `trial`'s user attributes (an optuna.Trial or anything with `set_user_attr`)."""
    for key, value in summary_attrs(summary, objective).items():
        trial.set_user_attr(key, value)


def stored_summary(user_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary record stored in a trial's user attributes; None when it has none (or it is incomplete)."""
    n = user_attrs.get(PARTS_KEY)
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        parts = [user_attrs.get(f"{PART_PREFIX}{i}") for i in range(n)]
        if not all(isinstance(p, str) for p in parts):
            return None
        try:
            record = json.loads("".join(parts))
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    legacy = user_attrs.get(LEGACY_KEY)
    return legacy if isinstance(legacy, dict) else None


def summary_keys(user_attrs: Mapping[str, Any]) -> list[str]:
    """The user attribute keys that hold a stored summary (to clear them on a re-queued copy)."""
    return [k for k in user_attrs if k in (PARTS_KEY, LEGACY_KEY) or k.startswith((PART_PREFIX, METRIC_PREFIX))]
