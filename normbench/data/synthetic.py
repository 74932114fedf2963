"""A small deterministic, learnable image dataset for tests and smoke runs.

Each class has a fixed random prototype image; a sample is its class prototype plus Gaussian noise.
Everything derives from `data_seed`, so the data are identical across runs and machines.
"""

from __future__ import annotations

import torch

from normbench.data.registry import RawSplits, register_dataset


@register_dataset("synthetic", aliases=("synth",))
def synthetic(
    root: str | None,
    download: bool,
    num_train: int = 512,
    num_test: int = 256,
    num_classes: int = 10,
    channels: int = 1,
    image_size: int = 28,
    noise: float = 1.0,
    data_seed: int = 1234,
) -> RawSplits:
    """Class prototypes + Gaussian noise; `noise` sets the difficulty."""
    for name, value in (("num_train", num_train), ("num_test", num_test), ("num_classes", num_classes),
                        ("channels", channels), ("image_size", image_size)):
        if value < 1:
            raise ValueError(f"dataset 'synthetic': {name} must be >= 1, got {value}")
    g = torch.Generator().manual_seed(data_seed)
    protos = torch.rand(num_classes, channels, image_size, image_size, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = protos[y] + noise * 0.25 * torch.randn(n, channels, image_size, image_size, generator=g)
        return x.clamp(0, 1), y

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    return RawSplits(train_x, train_y, test_x, test_y, num_classes=num_classes, source=f"synthetic(seed={data_seed})")
