"""MNIST, KMNIST, EMNIST, CIFAR-100, SVHN and a user's folder of images, through torchvision's dataset classes.

Each is looked up as CIFAR-10 is (normbench.data.cifar): in `data.root` only, if given; else in the user cache
(normbench.data.registry.user_cache), downloaded into it by torchvision when missing and `data.download`.

- mnist, kmnist, emnist: torchvision's MNIST / KMNIST / EMNIST classes read the IDX files of
  `<root>/<MNIST|KMNIST|EMNIST>/raw/` (uncompressed, the layout torchvision downloads), 28x28 grey images.
  EMNIST's `split` option picks the split; its images come as torchvision gives them (transposed, as stored).
- cifar100: torchvision's CIFAR100 refuses any file whose md5 is not the original's, so the python batches
  `cifar-100-python/train` and `test` are read as CIFAR-10's are (their 100 fine labels); torchvision downloads.
- svhn: torchvision's SVHN checks md5s too, so `train_32x32.mat` / `test_32x32.mat` are read with scipy as
  torchvision reads them (label 10 is the digit 0); torchvision downloads.
- image_folder: torchvision's ImageFolder over `<root>/train/<class>/*` and `<root>/test/<class>/*` (any image
  format PIL reads), each image resized to `image_size` (and made grey with `grayscale`); a user's own data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from normbench.data.registry import RawSplits, register_dataset, try_download, user_cache
from normbench.errors import ConfigError

EmnistSplit = Literal["byclass", "bymerge", "balanced", "letters", "digits", "mnist"]
EMNIST_SIZES = {"byclass": (697932, 116323), "bymerge": (697932, 116323), "balanced": (112800, 18800),
                "letters": (124800, 20800), "digits": (240000, 40000), "mnist": (60000, 10000)}


def _folder(name: str, root: str | None) -> Path:
    return Path(root).expanduser() if root is not None else user_cache(name)


def _load(make: Callable[..., Any], what: str, name: str, root: str | None, download: bool,
          hint: str) -> tuple[Any, Any, Path]:
    """(train, test) torchvision datasets of `make(folder, train=..., download=False)`, downloading into the
    user cache (only there) when they are missing."""
    folder = _folder(name, root)

    def both() -> tuple[Any, Any]:
        return make(str(folder), train=True, download=False), make(str(folder), train=False, download=False)

    try:
        train, test = both()
    except RuntimeError:  # torchvision: "Dataset not found"
        if root is not None:
            raise ConfigError(f"{what} not found in data.root={root}; {hint}") from None
        if not download:
            raise ConfigError(f"{what} not found in {folder}; {hint}") from None
        try_download(make, folder, f"{what} (looked in {folder})", hint)
        train, test = both()
    return train, test, folder


def _idx_dataset(cls_name: str, what: str, name: str, root: str | None, download: bool, **options: Any) -> RawSplits:
    import torchvision.datasets as tvd

    cls = functools.partial(getattr(tvd, cls_name), **options)
    hint = (f"point data.root=PATH at a folder holding {cls_name}/raw/ with the uncompressed IDX files "
            "(torchvision's layout)")
    train, test, _ = _load(cls, what, name, root, download, hint)
    return RawSplits(train_x=train.data.unsqueeze(1).contiguous(), train_y=train.targets.long(),
                     test_x=test.data.unsqueeze(1).contiguous(), test_y=test.targets.long(),
                     num_classes=len(train.classes), source=str(Path(train.raw_folder)))


@register_dataset("mnist", sizes=lambda: (60000, 10000))
def mnist(root: str | None, download: bool) -> RawSplits:
    """MNIST: 60k/10k 28x28 grey digits, 10 classes (torchvision's MNIST class)."""
    return _idx_dataset("MNIST", "MNIST", "mnist", root, download)


@register_dataset("kmnist", sizes=lambda: (60000, 10000))
def kmnist(root: str | None, download: bool) -> RawSplits:
    """Kuzushiji-MNIST: 60k/10k 28x28 grey cursive Japanese characters, 10 classes (torchvision's KMNIST)."""
    return _idx_dataset("KMNIST", "KMNIST", "kmnist", root, download)


@register_dataset("emnist", sizes=lambda split="balanced", **_: EMNIST_SIZES[split])
def emnist(root: str | None, download: bool, split: EmnistSplit = "balanced") -> RawSplits:
    """EMNIST's `split`: 28x28 grey handwritten characters (torchvision's EMNIST; `balanced`: 47 classes)."""
    return _idx_dataset("EMNIST", f"EMNIST ({split})", "emnist", root, download, split=split)


CIFAR100_HINT = "point data.root=PATH at a folder holding cifar-100-python/ (train, test)"


@register_dataset("cifar100", sizes=lambda: (50000, 10000))
def cifar100(root: str | None, download: bool) -> RawSplits:
    """CIFAR-100: 50k/10k 32x32 colour images, 100 (fine) classes."""
    from normbench.data.cifar import read_batch

    def find(base: Path) -> Path | None:
        for folder in (base, base / "cifar-100-python"):
            if (folder / "train").is_file() and (folder / "test").is_file():
                return folder
        return None

    base = _folder("cifar100", root)
    folder = find(base)
    if folder is None:
        if root is not None or not download:
            where = f"data.root={root}" if root is not None else str(base)
            raise ConfigError(f"CIFAR-100 not found in {where}; {CIFAR100_HINT}")
        from torchvision.datasets import CIFAR100

        try_download(CIFAR100, base, f"CIFAR-100 (looked in {base})", CIFAR100_HINT)
        folder = find(base)
        if folder is None:
            raise ConfigError(f"CIFAR-100 downloaded into {base}, but its files are not there; {CIFAR100_HINT}")
    train_x, train_y = read_batch(folder / "train")
    test_x, test_y = read_batch(folder / "test")
    return RawSplits(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x),
                     torch.from_numpy(test_y), num_classes=100, source=str(folder))


SVHN_HINT = "point data.root=PATH at a folder holding train_32x32.mat and test_32x32.mat"


def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3 x 32 x 32 uint8, labels 0-9) of an SVHN .mat file, read as torchvision's SVHN reads it."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x = np.transpose(np.asarray(mat["X"], dtype=np.uint8), (3, 2, 0, 1))
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except Exception as e:  # noqa: BLE001 - any decoding problem is a bad file
        raise ConfigError(f"{path} is not an SVHN .mat file ({type(e).__name__}: {e})") from None
    if len(x) != len(y):
        raise ConfigError(f"{path}: {len(x)} images but {len(y)} labels")
    y = np.where(y == 10, 0, y)  # SVHN stores the digit 0 as label 10
    return np.ascontiguousarray(x), y


@register_dataset("svhn", sizes=lambda: (73257, 26032))
def svhn(root: str | None, download: bool) -> RawSplits:
    """SVHN (cropped digits): 73k/26k 32x32 colour house numbers, 10 classes."""
    base = _folder("svhn", root)
    files = [base / "train_32x32.mat", base / "test_32x32.mat"]
    if not all(f.is_file() for f in files):
        if root is not None or not download:
            where = f"data.root={root}" if root is not None else str(base)
            raise ConfigError(f"SVHN not found in {where}; {SVHN_HINT}")
        from torchvision.datasets import SVHN

        def make(folder: str, train: bool, download: bool) -> Any:
            return SVHN(folder, split="train" if train else "test", download=download)

        try_download(make, base, f"SVHN (looked in {base})", SVHN_HINT)
    (train_x, train_y), (test_x, test_y) = (read_svhn(f) for f in files)
    return RawSplits(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x),
                     torch.from_numpy(test_y), num_classes=10, source=str(base))


def check_image_folder(root: str | None, image_size: int = 32, grayscale: bool = False) -> None:
    if root is None:
        raise ValueError("data=image_folder needs data.root=PATH: a folder with train/<class>/ and test/<class>/ "
                         "image folders")
    if image_size < 1:
        raise ValueError(f"data.image_size must be >= 1, got {image_size}")


@register_dataset("image_folder", aliases=("imagefolder",), check=check_image_folder)
def image_folder(root: str | None, download: bool, image_size: int = 32, grayscale: bool = False) -> RawSplits:
    """A user's images: `<root>/train/<class>/...` and `<root>/test/<class>/...` (torchvision's ImageFolder),
    resized to `image_size` x `image_size`, RGB (or grey with `grayscale`); classes sorted by folder name."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    check_image_folder(root, image_size, grayscale)
    base = Path(str(root)).expanduser()
    steps: list[Any] = [transforms.Resize((image_size, image_size))]
    if grayscale:
        steps.append(transforms.Grayscale())
    steps.append(transforms.PILToTensor())
    tf = transforms.Compose(steps)
    splits = []
    for split in ("train", "test"):
        try:
            ds = ImageFolder(str(base / split), transform=tf)
        except (FileNotFoundError, RuntimeError) as e:
            raise ConfigError(f"data=image_folder: {base / split} is not a folder of class folders of images ({e})"
                              ) from None
        splits.append(ds)
    train, test = splits
    if train.classes != test.classes:
        raise ConfigError(f"data=image_folder: train/ has classes {train.classes} but test/ has {test.classes}; "
                          "both need the same class folders")
    out = []
    for ds in splits:
        images = [ds[i] for i in range(len(ds))]
        out.append((torch.stack([x for x, _ in images]), torch.tensor([y for _, y in images], dtype=torch.int64)))
    (train_x, train_y), (test_x, test_y) = out
    return RawSplits(train_x, train_y, test_x, test_y, num_classes=len(train.classes), source=str(base))
