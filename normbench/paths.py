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


def config_dirs(search: tuple[Path, ...] = ()) -> list[Path]:
    """The config tree, then the user config directories `search` (`hydra.searchpath`), in Hydra's order: a
    name in both is the package's."""
    return [config_dir(), *search]


def group_choices(group: str, search: tuple[Path, ...] = ()) -> list[str]:
    """The file names (without .yaml) of config group `group` in the config tree and `search`, sorted."""
    names: set[str] = set()
    for root in config_dirs(search):
        folder = root / group
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def group_file(group: str, name: str, search: tuple[Path, ...] = ()) -> Path | None:
    """The file `<dir>/<group>/<name>.yaml` Hydra composes for `group=name` (the first directory that has it)."""
    for root in config_dirs(search):
        path = root / group / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def is_file_argument(name: str) -> bool:
    """`sweep=` names a file rather than a choice of the config tree (`sweep=~/my_sweep.yaml`, `sweep=./s.yaml`)."""
    return name.endswith((".yaml", ".yml")) or "/" in name or name.startswith("~")
