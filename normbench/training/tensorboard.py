"""TensorBoard event files for a run (`logger=tensorboard`), an optional dependency.

Lightning's TensorBoardLogger writes with the `tensorboard` package or, without it, `tensorboardX`; neither is
a dependency of normbench (`pip install 'normbench[tensorboard]'` adds tensorboardX, the smaller one).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from normbench.errors import ConfigError

WRITERS = ("tensorboard", "tensorboardX")
INSTALL = "pip install 'normbench[tensorboard]'"


def tensorboard_available() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in WRITERS)


def check_tensorboard() -> None:
    """Raises ConfigError (one line) when no TensorBoard writer package is installed."""
    if not tensorboard_available():
        raise ConfigError(f"logger=tensorboard needs the tensorboard or tensorboardX package, neither is installed; "
                          f"install it with: {INSTALL}")


def make_tensorboard_logger(out_dir: Path):
    """Lightning's TensorBoardLogger writing event files to `<out_dir>/tensorboard/`."""
    check_tensorboard()
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(out_dir), name="tensorboard", version="", default_hp_metric=False)
