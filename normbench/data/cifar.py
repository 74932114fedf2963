"""CIFAR-10 from the python-pickle batches (`cifar-10-batches-py/data_batch_1..5`, `test_batch`).

The batches are read directly rather than through torchvision's CIFAR10 class, whose md5 checks would
reject anything but the full original files; torchvision is used to download them when online.
Looked up in order: `data.root` (only there, if given), the user cache, then a download into it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from normbench.data.registry import RawSplits, register_dataset, try_download, user_cache
from normbench.errors import ConfigError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
HINT = "point data.root=PATH at a folder holding cifar-10-batches-py/ (data_batch_1..5, test_batch)"


def find_folder(root: Path) -> Path | None:
    for folder in (root, root / "cifar-10-batches-py"):
        if all((folder / b).is_file() for b in [*TRAIN_BATCHES, TEST_BATCH]):
            return folder
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - any decoding problem is a bad file
        raise ConfigError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if len(data) != len(labels):
        raise ConfigError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


@register_dataset("cifar10", aliases=("cifar",), sizes=lambda: (50000, 10000))
def cifar10(root: str | None, download: bool) -> RawSplits:
    """CIFAR-10: 50k/10k 32x32 colour images, 10 classes."""
    if root is not None:
        folder = find_folder(Path(root).expanduser())
        if folder is None:
            raise ConfigError(f"CIFAR-10 not found in data.root={root}; {HINT}")
    else:
        cache = user_cache("cifar10")
        folder = find_folder(cache)
        if folder is None:
            if not download:
                raise ConfigError(f"CIFAR-10 not found in {cache}; {HINT}")
            from torchvision.datasets import CIFAR10

            try_download(CIFAR10, cache, f"CIFAR-10 (looked in {cache})", HINT)
            folder = find_folder(cache)
            if folder is None:  # downloaded, yet the batches are not where torchvision puts them
                raise ConfigError(f"CIFAR-10 downloaded into {cache}, but its batches are not there; {HINT}")
    train = [read_batch(folder / b) for b in TRAIN_BATCHES]
    test_x, test_y = read_batch(folder / TEST_BATCH)
    return RawSplits(
        train_x=torch.from_numpy(np.concatenate([x for x, _ in train])),
        train_y=torch.from_numpy(np.concatenate([y for _, y in train])),
        test_x=torch.from_numpy(test_x), test_y=torch.from_numpy(test_y),
        num_classes=10, source=str(folder),
    )
