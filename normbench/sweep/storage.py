"""The study's storage, made dependable: checked before any work, retried through outages, faults named.

- `check_storage` runs before a sweep writes anything: a PostgreSQL server that refuses connections, a
  database that does not exist, or an explicit SQLite path in a missing directory is a user error (one
  line, exit 2); a corrupt SQLite file is a fault (one line, exit 1) and is never written to.
- `RetryingRDBStorage` retries every storage operation of a running sweep with exponential backoff
  (0.5 s doubling to 10 s) while the database is unreachable, for up to `sweep.storage_patience` seconds
  (a PostgreSQL restart, a network blip); then it raises a RunFault saying the study is intact and can be
  resumed. A full disk or a corrupt file is raised at once as a RunFault naming it.
- A password in a PostgreSQL URL is used to connect and nowhere else: `mask_password` hides it from
  `sys.argv` (which W&B records and worker processes inherit); reports and records show the URL masked.
  It can also come from PGPASSWORD or ~/.pgpass, which libpq reads when the URL has none.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from optuna.storages import RDBStorage

from normbench.errors import ConfigError, RunFault
from normbench.faults import RESUME_HINT, as_fault, cause_text, causes, first_line
from normbench.results import display_url, inspect_sqlite, sqlite_path

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
CONNECT_TIMEOUT_S = 10  # a server that does not answer at all must not hang a worker for minutes


class StorageUnreachable(RunFault):
    """The database stayed unreachable for longer than `sweep.storage_patience`."""


# ---------------------------------------------------------------- before any work


def study_exists(url: str, name: str) -> bool:
    """Whether storage `url` holds a study `name`; reads only (never creates a file, a table or a study)."""
    path = sqlite_path(url)
    if path is not None:
        if not path.is_file() or not inspect_sqlite(path):
            return False
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=120)
        try:
            return conn.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
        finally:
            conn.close()
    import sqlalchemy

    from normbench.sweep.locks import driver_url

    engine = sqlalchemy.create_engine(driver_url(url), **_engine_kwargs(url))
    try:
        with engine.connect() as db:
            if not sqlalchemy.inspect(db).has_table("studies"):
                return False
            found = db.execute(sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :n"), {"n": name})
            return found.first() is not None
    finally:
        engine.dispose()


def check_storage(url: str, sweep: str, explicit: bool, trials_dir: Path) -> None:
    """Everything about the storage that can be known before a sweep writes anything.

    Args:
        url: the storage URL (a password in it is used, never shown).
        sweep: the sweep (study) name.
        explicit: the URL came from `sweep.storage` (its directory is the user's to create).
        trials_dir: `<results_dir>/<sweep>/trials`, whose run directories a new study would overwrite.

    Raises:
        ConfigError: unreachable server, missing database or directory, or a new study over old trials/.
        RunFault: a corrupt SQLite file.
    """
    shown = display_url(url)
    path = sqlite_path(url)
    if path is not None and explicit and not path.parent.is_dir():
        raise ConfigError(f"sweep {sweep}: sweep.storage={shown}: directory {path.parent} does not exist; create "
                          f"it first (only the default <results_dir>/{sweep}/study.db is created for you)")
    if path is None and url.startswith("sqlite"):  # in memory: the trials would vanish with this process
        raise ConfigError(f"sweep {sweep}: sweep.storage={shown} names no database file; give one, e.g. "
                          "sqlite:///runs/study.db (or leave sweep.storage out: <results_dir>/<study>/study.db)")
    if path is not None and path.is_dir():
        raise ConfigError(f"sweep {sweep}: sweep.storage={shown} names the directory {path}; give a database file "
                          f"in it (e.g. sqlite:///{path / 'study.db'})")
    try:
        exists = study_exists(url, sweep)
    except (RunFault, ConfigError):
        raise
    except Exception as e:  # noqa: BLE001 - driver/connection errors come in many classes
        cause = getattr(e, "orig", None) or e  # the driver's own words, without SQLAlchemy's wrapping
        raise ConfigError(f"sweep {sweep}: cannot open storage {shown}: {first_line(cause)}") from None
    if not exists and trials_dir.is_dir() and any(trials_dir.iterdir()):
        n = sum(1 for _ in trials_dir.iterdir())
        empty = " (the file is empty)" if path is not None and path.is_file() and path.stat().st_size == 0 else ""
        raise ConfigError(f"sweep {sweep}: {trials_dir} holds {n} run directories but storage {shown} has no study "
                          f"'{sweep}'{empty}; a new study would overwrite them: restore the study database, move "
                          "trials/ away, or use another results_dir")


def mask_password(url: str) -> None:
    """Replaces the URL's password in `sys.argv` by *** (W&B records argv; spawned workers inherit it)."""
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    if not password:
        return
    forms = {str(password), quote(str(password), safe="")}
    for i, arg in enumerate(sys.argv):
        for form in forms:
            if form and form in arg:
                arg = arg.replace(form, "***")
        sys.argv[i] = arg


# ---------------------------------------------------------------- while a sweep runs


def _engine_kwargs(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() == "postgresql":
        # pre_ping: connections that died in a server restart are replaced, not handed out
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def transient(exc: BaseException, backend: str) -> bool:
    """Whether `exc` means "the database cannot be reached right now" (worth retrying), not a bad request."""
    from sqlalchemy import exc as sa_exc

    for e in causes(exc):
        text = str(e).lower()
        if backend == "sqlite":
            if "database is locked" in text or "database table is locked" in text:
                return True
            continue
        if isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                          sa_exc.TimeoutError)):
            return True
        module = type(e).__module__.split(".")[0]
        if module in ("psycopg", "psycopg2") and type(e).__name__ in ("OperationalError", "InterfaceError"):
            return True
    return False


class Retrier:
    """Calls that wait out a database outage: exponential backoff for up to `patience` seconds.

    One per process and storage: it remembers when the last outage ended (`recently_recovered`), which
    decides whether silence from other workers means death or just the outage.

    Args:
        url: the storage URL (decides what counts as an outage: connection errors, or a locked SQLite file).
        patience: seconds of failed attempts after which a call gives up with StorageUnreachable.
        shown: the URL as messages show it (default: `url` with its password masked).
    """

    def __init__(self, url: str, patience: float, shown: str | None = None):
        from sqlalchemy.engine import make_url

        self.patience = patience
        self.shown = shown or display_url(url)
        self.backend = make_url(url).get_backend_name()
        path = sqlite_path(url)
        self.where = str(path) if path is not None else self.shown
        self._local = threading.local()
        self._lock = threading.Lock()
        self._outage_start: float | None = None
        self.last_recovery: float | None = None  # time.monotonic() when the last outage ended

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_local", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local, self._lock = threading.local(), threading.Lock()

    def recently_recovered(self, window: float) -> bool:
        """Whether an outage ended less than `window` seconds ago (other workers' heartbeats may lag)."""
        return self.last_recovery is not None and time.monotonic() - self.last_recovery < window

    def once(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn` once, not retried, but noting an outage (and its end) like retried calls do."""
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            if transient(e, self.backend):
                self._outage(e)
            raise
        self._recovered()
        return result

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, retried while the database is unreachable; faults become RunFaults."""
        if getattr(self._local, "depth", 0):  # a call inside a retried one: the outer one retries
            return fn(*args, **kwargs)
        self._local.depth = 1
        try:
            delay, start = FIRST_DELAY_S, None
            while True:
                try:
                    result = fn(*args, **kwargs)
                except Exception as e:
                    fault = as_fault(e, self.where)
                    if fault is not None:
                        raise fault from None
                    if not transient(e, self.backend):
                        raise
                    now = time.monotonic()
                    start = now if start is None else start
                    self._outage(e)
                    if now - start >= self.patience:
                        raise StorageUnreachable(
                            f"storage {self.shown} unreachable for {now - start:.0f} s "
                            f"({cause_text(e)}); stopped after sweep.storage_patience="
                            f"{self.patience:g} s. Everything stored is intact: {RESUME_HINT} (trials left "
                            "running are re-queued)") from None
                    time.sleep(min(delay, self.patience - (now - start)))
                    delay = min(2 * delay, MAX_DELAY_S)
                    continue
                if start is not None:
                    self._recovered()
                return result
        finally:
            self._local.depth = 0

    def _outage(self, e: BaseException) -> None:
        with self._lock:
            if self._outage_start is not None:
                return
            self._outage_start = time.monotonic()
        print(f"warning: storage {self.shown} unreachable ({cause_text(e)}); retrying for up to "
              f"{self.patience:g} s", file=sys.stderr, flush=True)

    def _recovered(self) -> None:
        with self._lock:
            if self._outage_start is None:
                return
            seconds, self._outage_start = time.monotonic() - self._outage_start, None
            self.last_recovery = time.monotonic()
        print(f"storage {self.shown} reachable again after {seconds:.0f} s", file=sys.stderr, flush=True)


class RetryingRDBStorage(RDBStorage):
    """An Optuna RDBStorage whose operations (its creation included) go through a Retrier.

    Args:
        url: the storage URL.
        retrier: waits out outages; shared with the study lock.
        **kwargs: RDBStorage's own (heartbeat_interval, grace_period, engine_kwargs, ...).
    """

    def __init__(self, url: str, *, retrier: Retrier, **kwargs: Any):
        self.retrier = retrier
        engine_kwargs = {**_engine_kwargs(url), **(kwargs.pop("engine_kwargs", None) or {})}
        retrier.call(super().__init__, url, engine_kwargs=engine_kwargs, **kwargs)

    def recently_recovered(self, window: float) -> bool:
        return self.retrier.recently_recovered(window)

    def beat(self, trial_id: int) -> None:
        """One heartbeat attempt, not retried: the heartbeat thread simply tries again at its next beat.

        A failed beat still marks the outage (and a later good one its end): a worker that trained through
        the whole outage then knows, too, that the other workers' heartbeats lag behind.
        """
        self.retrier.once(RDBStorage.record_heartbeat, self, trial_id)


# Every storage operation Optuna (or normbench) performs on a running study goes through one of these.
_RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
            "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
            "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
            "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param", "get_trial_param",
            "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
            "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
            "get_best_trial", "_get_best_trial_id", "record_heartbeat", "_get_stale_trial_ids")


def _retried(name: str):
    original = getattr(RDBStorage, name)

    def method(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.retrier.call(original, self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = original.__doc__
    return method


for _name in _RETRIED:
    setattr(RetryingRDBStorage, _name, _retried(_name))
