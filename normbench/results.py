"""Where a sweep's results live and how they are stored: written by the sweep, read by the reports and studies.

Layout under `<results_dir>/<sweep>/`: `study.db` (the default embedded SQLite storage),
`trials/<number>/` (each trial's run directory with its summary.json), `trials.csv`, and the reports
(table.md, table.tex, figures).

A trial's run record in the Optuna study is stored whole and read back the same. The summary record is
several KB (history, config, versions). It is stored as its JSON text split into parts (`summary.0`,
`summary.1`, ...; `summary_parts` = how many) whose stored form (Optuna JSON-encodes each attribute) stays
under `PART_LIMIT` characters, so neither a storage backend nor a viewer that limits one attribute's size can
cut it. The headline metrics are also stored as numeric attributes (`metric.test_acc`, ...) that
optuna-dashboard can sort and plot. `stored_summary` reads the record back (also from studies written before,
which hold it whole as `summary`).

Nothing here imports torch, Optuna or the sweep machinery: the report commands start from this module.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from normbench.errors import ConfigError, RunFault
from normbench.faults import as_fault, first_line
from normbench.files import finite_or_none
from normbench.record import HEADLINE

# ---------------------------------------------------------------- where


STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9_][\w.-]*$")  # a folder name under results_dir and an Optuna study name
MAX_STUDY_NAME = 128  # a folder name (file systems take 255 bytes) and an Optuna study name, with room to spare


def check_study_name(study: str, what: str) -> str:
    """`study` when it can name a folder under results_dir: letters, digits, _ . - (no `..`, no `/`), at most
    MAX_STUDY_NAME characters. Every command that makes a path of a study name checks it here.

    Raises:
        ConfigError: `what` (e.g. "sweep x: study_name") must be a folder name, got ...
    """
    if not isinstance(study, str) or not STUDY_NAME_RE.match(study):
        raise ConfigError(f"{what} must be a folder name (letters, digits, _ . -), got {study!r}")
    if len(study) > MAX_STUDY_NAME:
        raise ConfigError(f"{what} must be a folder name of at most {MAX_STUDY_NAME} characters, got "
                          f"{len(study)} characters")
    return study


def sweep_dir(results_dir: str | Path, sweep: str) -> Path:
    """`<results_dir>/<sweep>`; ConfigError when `sweep` is not a folder name (`check_study_name`): a name never
    leads a path out of results_dir."""
    return Path(results_dir) / check_study_name(sweep, "study name")


def default_storage_url(results_dir: str | Path, sweep: str) -> str:
    """The embedded default: an SQLite file `<results_dir>/<sweep>/study.db` (absolute path)."""
    return f"sqlite:///{(sweep_dir(results_dir, sweep) / 'study.db').resolve()}"


def storage_url(results_dir: str | Path, sweep: str, storage: str | None = None) -> str:
    """`storage` (any Optuna RDB URL, e.g. postgresql://...) if given, else the default SQLite file."""
    return storage or default_storage_url(results_dir, sweep)


def display_url(url: str) -> str:
    """The storage URL with its password masked, for messages and logs (as given when it is not a URL)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (e.g. a journal file): show it as given
        return url


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for other backends and in-memory databases)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def inspect_sqlite(path: Path) -> bool:
    """Whether the SQLite file `path` holds Optuna's tables (False: empty); read-only, writes nothing.

    Raises:
        RunFault: the file is not a database or fails SQLite's quick_check (corrupt pages anywhere).
    """
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=120)
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise as_fault(e, str(path)) or RunFault(f"cannot read {path}: {first_line(e)}") from None
    if check != [("ok",)]:
        detail = "; ".join(str(r[0]) for r in check[:2])
        # as_fault makes a RunFault of every "database disk image is malformed" error
        raise cast(RunFault, as_fault(sqlite3.DatabaseError(f"database disk image is malformed: {detail}"),
                                      str(path))) from None
    return "studies" in tables


# ---------------------------------------------------------------- a trial's run record in the study

PART_LIMIT = 1000  # characters of one part as stored (JSON-encoded, with quotes and escapes)
PARTS_KEY = "summary_parts"
PART_PREFIX = "summary."
LEGACY_KEY = "summary"
METRIC_PREFIX = "metric."


def split_json(text: str, limit: int = PART_LIMIT) -> list[str]:
    """`text` cut into consecutive parts, each at most `limit` characters once JSON-encoded."""
    parts, size = [], 2  # the two quotes
    current: list[str] = []
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
            record = json.loads("".join(cast(list[str], parts)))  # all str (checked above)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    legacy = user_attrs.get(LEGACY_KEY)
    return legacy if isinstance(legacy, dict) else None


def summary_keys(user_attrs: Mapping[str, Any]) -> list[str]:
    """The user attribute keys that hold a stored summary (to clear them on a re-queued copy)."""
    return [k for k in user_attrs if k in (PARTS_KEY, LEGACY_KEY) or k.startswith((PART_PREFIX, METRIC_PREFIX))]
