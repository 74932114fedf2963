"""Fashion-MNIST from the IDX gz files.

Looked up in order: `data.root` (if given: only there), the Debian package's
/usr/share/datasets/fashion-mnist (`apt-get install dataset-fashion-mnist`), a previous download in the
user cache, then torchvision's download into that cache when online.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from normbench.data.registry import RawSplits, register_dataset, try_download, user_cache
from normbench.errors import ConfigError

SYSTEM_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
HINT = ("install it with `apt-get install dataset-fashion-mnist` (-> /usr/share/datasets/fashion-mnist) "
        "or point data.root=PATH at a folder with the four IDX .gz files")


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (gzipped or not): big-endian magic (0x08 = uint8, then ndim), dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ConfigError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def find_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder` (also its raw/ and FashionMNIST/raw/ subfolders), gz or not."""
    for base in (folder, folder / "raw", folder / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in FILES.items():
            for cand in (base / f"{stem}.gz", base / stem):
                if cand.is_file():
                    found[key] = cand
                    break
        if len(found) == len(FILES):
            return found
    return None


def locate(root: str | None, download: bool) -> dict[str, Path]:
    if root is not None:
        files = find_files(Path(root).expanduser())
        if files is None:
            raise ConfigError(f"Fashion-MNIST not found in data.root={root}; {HINT}")
        return files
    cache = user_cache("fashion_mnist")
    for folder in (SYSTEM_ROOT, cache):
        files = find_files(folder)
        if files is not None:
            return files
    if not download:
        raise ConfigError(f"Fashion-MNIST not found in {SYSTEM_ROOT} or {cache}; {HINT}")
    from torchvision.datasets import FashionMNIST

    try_download(FashionMNIST, cache, f"Fashion-MNIST (looked in {SYSTEM_ROOT} and {cache})", HINT)
    files = find_files(cache)
    if files is None:  # pragma: no cover - torchvision changed its layout
        raise ConfigError(f"Fashion-MNIST download into {cache} left no IDX files; {HINT}")
    return files


@register_dataset("fashion_mnist", aliases=("fmnist", "fashionmnist"), sizes=lambda: (60000, 10000))
def fashion_mnist(root: str | None, download: bool) -> RawSplits:
    """Fashion-MNIST: 60k/10k 28x28 grayscale images, 10 classes."""
    files = locate(root, download)
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            folder = files[f"{split}_x"].parent
            raise ConfigError(f"Fashion-MNIST {split} images and labels differ in count in {folder}")
    return RawSplits(
        train_x=torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1),
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1),
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        num_classes=10,
        source=str(files["train_x"].parent),
    )
