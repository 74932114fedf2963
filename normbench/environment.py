"""What produced a run: the code version (git commit, package versions) and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from normbench.version import __version__


def git_info(path: Path | None = None) -> dict[str, Any]:
    """Commit sha and dirty flag of the checkout holding normbench (null outside a git checkout)."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"git_sha": sha, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def versions() -> dict[str, str | None]:
    import lightning
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "normbench": __version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
    }


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, Any]:
    """What ran a run: CPU model and logical cores (the accelerator and threads are recorded beside it)."""
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count()}
