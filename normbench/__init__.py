"""normbench: benchmark normalization layers in PyTorch.

`normbench.run(["norm=gn", "data.batch_size=8"])` trains one run from a notebook or script exactly as
`python -m normbench run norm=gn data.batch_size=8` does and returns its summary record. Importing
normbench loads nothing heavy (torch, Lightning and Hydra load on the first run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from normbench.version import __version__

__all__ = ["__version__", "run"]


def run(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Trains one run for command-line style `overrides` and returns its summary (also in summary.json).

    Args:
        overrides: Hydra-syntax overrides, as after `python -m normbench run` (`norm=gn`, `seed=3`, ...).

    Raises:
        normbench.errors.ConfigError: a bad key or value, before any work (the message names it).
    """
    if isinstance(overrides, str):
        raise TypeError("normbench.run takes a list of overrides, e.g. run(['norm=gn', 'data.batch_size=8'])")
    from normbench.config import load_config
    from normbench.train import train

    return train(load_config(list(overrides))).summary
