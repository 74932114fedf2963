"""The report commands' options (`table.*`, `report.*`) checked for type and range before the study is read.

The builders check what needs the study (a swept key exists, a sort column is shown); here is what does not:
a level in (0, 1), a flag that is a boolean, a metric that the run record can hold, a list where a list
goes. Each problem is one ConfigError line naming the option, what it got and what is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from normbench.errors import ConfigError
from normbench.report.metrics import check_metric_keys

Check = Callable[[str, Any], None]


def _fail(key: str, value: Any, accepted: str) -> ConfigError:
    return ConfigError(f"{key} must be {accepted}, got {value!r}")


def boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(key, value, "true or false")


def level(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value < 1:
        raise _fail(key, value, "a confidence level in (0, 1), e.g. 0.95")


def text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(key, value, "a non-empty string")


def optional_text(key: str, value: Any) -> None:
    if value is not None:
        text(key, value)


def metric(key: str, value: Any) -> None:
    text(key, value)
    check_metric_keys([value], key)


def optional_metric(key: str, value: Any) -> None:
    if value is not None:
        metric(key, value)


def keys(key: str, value: Any) -> None:
    """null, a key, or a non-empty list of keys."""
    if value is None or isinstance(value, str) and value:
        return
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, value, "a key or a non-empty list of keys (e.g. [norm, data.batch_size]) or null")


def mapping(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, dict):
        raise _fail(key, value, "a mapping or null")


def columns(key: str, value: Any) -> None:
    if isinstance(value, list) and not value:
        raise _fail(key, value, "a non-empty list of columns (null: the default columns)")


def references(key: str, value: Any) -> None:
    if value is not None and (not isinstance(value, list) or not all(isinstance(r, dict) for r in value)):
        raise _fail(key, value, "a list of mappings {label, source, key, rows} or null")


def formats(key: str, value: Any) -> None:
    from normbench.report.figures import FORMATS

    given = [value] if isinstance(value, str) else value
    if not isinstance(given, list) or not given or any(f not in FORMATS for f in given):
        raise _fail(key, value, f"a non-empty list of {', '.join(FORMATS)}")


def choice(*accepted: str) -> Check:
    """One of `accepted` (the message: "must be a, b or c")."""
    said = f"{', '.join(accepted[:-1])} or {accepted[-1]}"

    def check(key: str, value: Any) -> None:
        if value not in accepted:
            raise _fail(key, value, said)

    return check


def figures(key: str, value: Any) -> None:
    from normbench.report.figures import selected

    keys(key, value)
    selected({"figures": value})  # the names, before the study is read


def wandb_name(key: str, value: Any) -> None:
    from normbench.config import check_wandb_names

    text(key, value)
    try:
        check_wandb_names({"project": value})
    except ConfigError as e:
        raise ConfigError(str(e).replace("logger.project", key, 1)) from None


TABLE_CHECKS: dict[str, Check] = {
    "columns": columns, "layout": choice("long", "pivot"), "metric": choice("accuracy", "error"),
    "compare_key": text, "compare_metric": optional_metric, "level": level,
    "dims": keys, "where": mapping, "references": references, "caption": optional_text, "rows": keys,
    "cols": keys, "value": optional_metric, "col_labels": mapping, "row_options": boolean, "deltas_only": boolean,
}

REPORT_CHECKS: dict[str, Check] = {
    "figures": figures, "batch_key": text, "momentum_key": text, "calib_metric": metric, "ema_metric": metric,
    "precise_metric": metric, "formats": formats, "project": wandb_name, "entity": optional_text,
    "artifact": boolean, "mode": choice("auto", "online", "offline"),
}


def check_options(options: dict[str, Any], checks: dict[str, Check], section: str) -> None:
    """Checks each of `options` that `checks` knows (`section`: table or report, for the message).

    Raises:
        ConfigError: the first option of the wrong type or out of range.
    """
    for key, check in checks.items():
        if key in options:
            check(f"{section}.{key}", options[key])
