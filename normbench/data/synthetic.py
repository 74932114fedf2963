"""A small deterministic, learnable image dataset for tests and smoke runs.

Each class has a fixed, smooth random prototype image (a 4x4 pattern upsampled); a sample is its class
prototype, shifted by up to 2 pixels, plus Gaussian pixel noise of standard deviation `noise` x 0.5. At the
default noise a LeNet learns it to roughly 80-95% test accuracy in a few epochs, so accuracy differences
between norms remain visible. Everything derives from `data_seed`, so the data are identical across runs
and machines.
"""

from __future__ import annotations

from pathlib import Path

import torch

from normbench.data.registry import RawSplits, register_dataset

MAX_VALUES = 2**28  # images x channels x pixels of both splits: 1 GiB as float32
MAX_IMAGE_SIZE = 512


def check_options(root: str | None, num_train: int = 512, num_test: int = 256, num_classes: int = 10,
                  channels: int = 1, image_size: int = 28, noise: float = 2.0, data_seed: int = 1234) -> None:
    """Value ranges of the synthetic options (ValueError naming the option), checked before any data is made."""
    if root is not None and not Path(root).expanduser().exists():
        raise ValueError(f"data.root={root} does not exist (synthetic data are generated, not read: "
                         "leave data.root unset)")
    for name, value, low in (("num_train", num_train, 1), ("num_test", num_test, 1), ("num_classes", num_classes, 2),
                             ("channels", channels, 1), ("image_size", image_size, 1)):
        if value < low:
            extra = " (a classifier needs two classes)" if name == "num_classes" else ""
            raise ValueError(f"dataset 'synthetic': {name} must be >= {low}{extra}, got {value}")
    if num_classes > num_train:  # y = index % num_classes: the classes past num_train would have no sample
        raise ValueError(f"dataset 'synthetic': num_classes={num_classes} exceeds num_train={num_train} (a class "
                         f"without a training sample is never learnt); accepted: 2 to num_train")
    if image_size > MAX_IMAGE_SIZE:
        raise ValueError(f"dataset 'synthetic': image_size must be <= {MAX_IMAGE_SIZE}, got {image_size}")
    values = (num_train + num_test) * channels * image_size**2
    if values > MAX_VALUES:
        raise ValueError(f"dataset 'synthetic': (num_train + num_test) x channels x image_size^2 = {values:,} values "
                         f"({values * 4 / 2**30:.1f} GiB as float32) exceeds the limit of {MAX_VALUES:,} (1 GiB)")
    if noise < 0:
        raise ValueError(f"dataset 'synthetic': noise must be >= 0, got {noise}")


def split_sizes(num_train: int = 512, num_test: int = 256, **_: object) -> tuple[int, int]:
    return num_train, num_test


@register_dataset("synthetic", aliases=("synth",), check=check_options, sizes=split_sizes)
def synthetic(
    root: str | None,
    download: bool,
    num_train: int = 512,
    num_test: int = 256,
    num_classes: int = 10,
    channels: int = 1,
    image_size: int = 28,
    noise: float = 2.0,
    data_seed: int = 1234,
) -> RawSplits:
    """Class prototypes + Gaussian noise; `noise` sets the difficulty."""
    check_options(None, num_train, num_test, num_classes, channels, image_size, noise, data_seed)
    g = torch.Generator().manual_seed(data_seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear",
                                             align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        x = torch.stack([protos[c].roll((int(dy), int(dx)), dims=(-2, -1))
                         for c, (dy, dx) in zip(y.tolist(), shifts.tolist(), strict=True)])
        x = x + noise * 0.5 * torch.randn(n, channels, image_size, image_size, generator=g)
        return x, y

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    return RawSplits(train_x, train_y, test_x, test_y, num_classes=num_classes, source=f"synthetic(seed={data_seed})")
