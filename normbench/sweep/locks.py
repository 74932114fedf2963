"""An inter-process lock per study, held while a worker creates the study, enqueues points or claims a trial.

Optuna's own operations are atomic one by one, but "is this point already queued? if not, queue it"
and "fewer than n_configs sampled? then sample one" are not. Every normbench worker does those under
this lock, so workers on one machine (SQLite: an flock next to the database file) or on many
(PostgreSQL: a session advisory lock) never queue or sample twice. Both kinds are released by the
operating system or the server when the holder dies, so a killed worker never leaves a stuck lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path


class StudyLock:
    """`with lock:` serializes the bookkeeping of all workers of one study."""

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class FileLock(StudyLock):
    """flock(2) on `<database>.lock`; for SQLite, whose workers share one machine."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PostgresAdvisoryLock(StudyLock):
    """pg_advisory_lock on a key derived from the study name, on a connection of its own."""

    def __init__(self, url: str, study_name: str):
        import sqlalchemy

        self.key = int.from_bytes(hashlib.sha1(f"normbench:{study_name}".encode()).digest()[:8], "big", signed=True)
        self._engine = sqlalchemy.create_engine(driver_url(url), pool_size=1, max_overflow=0, pool_pre_ping=True,
                                                connect_args={"connect_timeout": 10})
        self._conn: sqlalchemy.engine.Connection | None = None
        # Set by the sweep once its storage is open: taking the lock then waits out a server outage too.
        self.retry = None

    def _acquire(self) -> None:
        import sqlalchemy

        conn = self._engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn = conn

    def __enter__(self) -> PostgresAdvisoryLock:
        if self.retry is not None:
            self.retry(self._acquire)
        else:
            self._acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        import sqlalchemy

        if self._conn is not None:
            with contextlib.suppress(Exception):  # a dropped connection has released the lock already
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._engine.dispose()


def driver_url(url: str) -> str:
    """`postgresql://` without a driver means psycopg 3 (normbench's dependency; SQLAlchemy 2.0 would pick
    psycopg2, 2.1 picks psycopg)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def study_lock(url: str, study_name: str) -> StudyLock:
    """The lock for a storage URL: file lock (SQLite), advisory lock (PostgreSQL), else none (warned)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            return StudyLock()  # in-memory: one process only
        return FileLock(Path(database).with_name(Path(database).name + ".lock"))
    if backend == "postgresql":
        return PostgresAdvisoryLock(url, study_name)
    warnings.warn(f"sweep storage '{backend}' has no inter-process lock in normbench (sqlite and postgresql "
                  "have one): with several workers, start one first and the others after it runs a trial",
                  stacklevel=2)
    return StudyLock()
