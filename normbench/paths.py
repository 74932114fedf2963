"""Where normbench's own files live: the configs/ folder and its config groups (no torch, no Hydra)."""

from __future__ import annotations

import os
from pathlib import Path

from normbench.errors import ConfigError


def config_dir() -> Path:
    """configs/ of the installed package (wheel) or of the source checkout (editable install).

    `NORMBENCH_CONFIG_DIR` points elsewhere (tests, a user's own config tree).
    """
    env = os.environ.get("NORMBENCH_CONFIG_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here / "configs", here.parent / "configs"):
        if (cand / "config.yaml").is_file():
            return cand
    raise ConfigError(f"normbench configs not found next to {here}")  # pragma: no cover


def group_choices(group: str) -> list[str]:
    """The file names (without .yaml) of config group `group`, sorted."""
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
