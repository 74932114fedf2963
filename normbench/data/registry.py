"""The dataset registry. A loader returns the raw splits as tensors; memory.py does the rest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from normbench.errors import ConfigError
from normbench.registry import Registry

# Loaders are called as fn(root, download, **options) -> RawSplits. Optional metadata, used by the config
# checks before any data is read: `check(root, **options)` raises ValueError on a bad value, and
# `sizes(**options) -> (train, test)` gives the split sizes (for data.train_subset / data.test_subset).
# Plugins (normbench.plugins: `data=pkg.mod:load`, entry points of normbench.datasets) may declare both.
DATASETS = Registry("dataset", skip_params=2, plugin_group="normbench.datasets",
                    plugin_meta={"check": None, "sizes": None}, positional=("root", "download"))


def register_dataset(name: str, *, aliases: tuple[str, ...] = (), **meta):
    return DATASETS.register(name, aliases=aliases, **meta)


@dataclass
class RawSplits:
    """Train and test images (N, C, H, W; uint8 or float) and int64 labels, plus class count."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    source: str  # where the data came from, recorded in the run summary


def user_cache(name: str) -> Path:
    import os

    base = os.environ.get("NORMBENCH_DATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "normbench")
    return Path(base) / name


def try_download(dataset_cls, root: Path, what: str, hint: str) -> None:
    """Downloads a torchvision dataset into `root`; offline or failing -> one clear ConfigError."""
    import socket

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        for train in (True, False):
            dataset_cls(str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - any network/IO failure means "not available"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{what} not found and download failed ({reason}); {hint}") from None
    finally:
        socket.setdefaulttimeout(old)
