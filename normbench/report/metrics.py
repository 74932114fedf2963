"""Per-run metrics that reports read: summary fields, their error form, and a few derived from the history.

`metric_value(summary, key)`:
    - a finite numeric summary field (`test_acc`, `calib_kl`, ...);
    - the error form of an accuracy: any key with `error` in place of `acc` is 1 - that accuracy
      (`test_error` = 1 - `test_acc`, `test_error_precise` = 1 - `test_acc_precise`);
    - a derived per-run metric of DERIVED (computed from the per-epoch history).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from normbench import record
from normbench.errors import ConfigError


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def epoch_values(summary: dict[str, Any], key: str, fallback: str | None = None) -> dict[int, float]:
    """{epoch: value} of a per-epoch history field (`fallback` where an epoch lacks `key`)."""
    out = {}
    for h in summary.get("history") or []:
        if not isinstance(h, dict) or "epoch" not in h:
            continue
        v = _number(h.get(key, h.get(fallback) if fallback else None))
        if v is not None:
            out[int(h["epoch"])] = v
    return out


def epoch_gaps(summary: dict[str, Any], better: str = "test_acc_precise", worse: str = "test_acc_ema",
               fallback: str = "test_acc") -> dict[int, float]:
    """{epoch: history[better] - history[worse]} over the epochs that recorded both."""
    a, b = epoch_values(summary, better), epoch_values(summary, worse, fallback)
    return {e: a[e] - b[e] for e in sorted(set(a) & set(b))}


def _max_epoch_precise_gain(summary: dict[str, Any]) -> float | None:
    gaps = epoch_gaps(summary)
    return max(gaps.values()) if gaps else None


def _mean_epoch_precise_gain(summary: dict[str, Any]) -> float | None:
    gaps = epoch_gaps(summary)
    return sum(gaps.values()) / len(gaps) if gaps else None


DERIVED: dict[str, Callable[[dict[str, Any]], float | None]] = {
    # the largest per-epoch test-accuracy gain of population (precise) statistics over the EMA
    "max_epoch_precise_gain": _max_epoch_precise_gain,
    "mean_epoch_precise_gain": _mean_epoch_precise_gain,
}


def metric_value(summary: dict[str, Any] | None, key: str) -> float | None:
    """The value of metric `key` for one run's summary (see the module docstring); None if it has none."""
    if not summary:
        return None
    if key in summary:
        return _number(summary[key])
    if key in DERIVED:
        return DERIVED[key](summary)
    if "error" in key:
        acc = _number(summary.get(key.replace("error", "acc", 1)))
        return None if acc is None else 1.0 - acc
    return None


def is_known_metric(key: str) -> bool:
    """Whether `metric_value` can ever give `key` a value: a numeric field of the run record, a DERIVED metric,
    or the error form of a numeric record field (`test_error`)."""
    if key in record.NUMERIC or key in DERIVED:
        return True
    return "error" in key and key.replace("error", "acc", 1) in record.NUMERIC


def check_metric_keys(keys: list[str], where: str) -> None:
    """Raises ConfigError naming the first of `keys` no run record can hold (`where`: the option, for the message).

    A column on a name the record never holds would be blank in every row, and the report would not say why.
    """
    for key in keys:
        if not is_known_metric(key):
            shown = ", ".join(n for n in record.HEADLINE if n in record.NUMERIC)
            raise ConfigError(f"{where}: {key!r} is not a numeric field of the run record; accepted: {shown}, their "
                              "error forms (test_error), ... (`python -m normbench.record` lists every field)")


def is_error(key: str) -> bool:
    return "error" in key and key not in DERIVED


def error_key(key: str) -> str:
    """The error form of an accuracy key (`test_acc` -> `test_error`); other keys unchanged."""
    return key.replace("acc", "error", 1) if "acc" in key and "acc_gap" not in key else key
