"""Faults during work, recognised from an exception and its causes: a full disk, a corrupt SQLite file.

Libraries report these in their own words (Optuna wraps every SQL error in "exceeding max length", SQLite
says "database or disk is full", Python raises OSError 28). `as_fault` turns them into one RunFault line
that names the cause, the file and what to do; anything else is left alone (None).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

from normbench.errors import RunFault

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DISK_FULL_TEXT = ("database or disk is full", "no space left on device", "could not extend file")
_CORRUPT_TEXT = ("database disk image is malformed", "file is not a database", "file is encrypted or is not a database")

RESUME_HINT = "rerun the same command to resume"


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it (explicit `raise ... from` first, else the exception being handled)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()).lower()


def disk_full(exc: BaseException) -> OSError | BaseException | None:
    """The exception in the chain that says the disk (or quota) is full, else None."""
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return e
        if any(t in _text(e) for t in _DISK_FULL_TEXT):
            return e
    return None


def corrupt_database(exc: BaseException) -> BaseException | None:
    """The exception in the chain that says an SQLite file is damaged or not a database, else None."""
    for e in causes(exc):
        if any(t in _text(e) for t in _CORRUPT_TEXT):
            return e
    return None


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause: the driver's own error rather than the layers that wrapped it."""
    *_, last = causes(exc)
    return getattr(last, "orig", None) or last


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split()) if text else type(exc).__name__


_WRAPPER_PREFIX = re.compile(r"^\([\w.]+\)\s*")  # SQLAlchemy's "(psycopg.OperationalError) " before the driver's words


def cause_text(exc: BaseException) -> str:
    """The cause of `exc` in words, for a message: the innermost message of its chain that says something.

    A driver may raise an error without words (psycopg's OperationalError(()) when a connection breaks), and
    SQLAlchemy's wrapper then holds only the class name; that gave "unreachable (())". Such messages are
    skipped; when no exception of the chain has words, the innermost one's class is named.
    """
    chain: list[BaseException] = []
    for e in causes(exc):
        chain.append(e)
        orig = getattr(e, "orig", None)
        if isinstance(orig, BaseException):
            chain.append(orig)
    for e in reversed(chain):
        lines = str(e).strip().splitlines()
        text = _WRAPPER_PREFIX.sub("", " ".join(lines[0].split())) if lines else ""
        if text.strip("()[]{}'\" ,.:;"):
            return text
    root = chain[-1]
    module = type(root).__module__.split(".")[0]
    name = type(root).__name__ if module == "builtins" else f"{module}.{type(root).__name__}"
    return f"{name} without a message (the connection failed or was closed)"


def as_fault(exc: BaseException, database: str | None = None) -> RunFault | None:
    """A RunFault for a full disk or a corrupt database (`database`: the file or URL involved), else None."""
    if isinstance(exc, RunFault):
        return exc
    full = disk_full(exc)
    if full is not None:
        where = getattr(full, "filename", None) or database
        target = f"cannot write {where}" if where else "cannot write"
        detail = getattr(full, "strerror", None) or first_line(full)
        return RunFault(f"disk full: {target} ({detail}); nothing stored was damaged: free space, then {RESUME_HINT}")
    bad = corrupt_database(exc)
    if bad is not None:
        where = database or "the study database"
        return RunFault(f"{where} is corrupt ({first_line(bad)}); normbench stopped without writing to it: restore "
                        "it from a backup, or use another results_dir or sweep.storage for a new study")
    return None
