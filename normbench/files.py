"""Files a run or a report writes: atomic JSON/text/bytes writes, and checks of an output folder."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError


def finite_or_none(obj: Any) -> Any:
    """Replaces NaN/inf floats (not valid JSON) with None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json_atomic(path: Path | str, obj: Any) -> Path:
    """Writes `obj` as JSON via a temp file in the same folder + rename: readers never see half a file."""
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc), else set back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Writes `data` via a temp file in the same folder + rename: readers never see half a file.

    The file gets the permissions any new file gets (0666 minus the umask), not the temp file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed write names no file: name the one being written (disk full...)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: Path | str) -> Any:
    with open(path) as f:
        return json.load(f)


def check_output_dir(path: Path | str, key: str) -> None:
    """Raises ConfigError unless `path` is, or can be made, a writable directory. Creates nothing (on a file
    system without storage, a probe folder is made in the deepest existing folder and removed at once).

    Args:
        path: the directory a command will write to.
        key: the config key that named it (for the message), e.g. `out_dir`.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{key}={path} is an existing file, not a directory; give a directory")
    existing = target
    while not existing.exists():  # the deepest folder that exists: where the new ones would be made
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={path}: {existing} is a file, so no directory can be made there")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise ConfigError(f"{key}={path} is on a read-only file system ({existing}); give a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {existing} is not writable by this user; give a writable directory")
    if os.statvfs(existing).f_blocks == 0:  # no storage behind it: a pseudo file system such as /proc or /sys,
        try:  # which passes the checks above and still refuses a new folder; a probe folder tells
            os.rmdir(tempfile.mkdtemp(prefix=".normbench-probe-", dir=existing))
        except OSError as e:
            raise ConfigError(f"{key}={path}: no directory can be made in {existing} ({e.strerror or e}); give a "
                              "writable directory") from None
