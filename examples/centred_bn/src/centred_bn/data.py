"""A normbench dataset loader: `load(root, download, **options) -> RawSplits` (a generated one: no files)."""

from __future__ import annotations

import torch


def load(root: str | None, download: bool, num_train: int = 512, num_test: int = 256, image_size: int = 16):
    """Images with horizontal stripes of one of 10 periods (the label), in noise; deterministic."""
    from normbench.data import RawSplits

    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (n,), generator=gen)
        rows = torch.arange(image_size).view(1, image_size, 1).float()
        x = torch.sin(rows * (y.view(-1, 1, 1).float() + 1) * 0.5)
        x = x.expand(n, image_size, image_size) + 0.5 * torch.randn(n, image_size, image_size, generator=gen)
        return x.unsqueeze(1).contiguous(), y

    train_x, train_y = split(num_train)
    test_x, test_y = split(num_test)
    return RawSplits(train_x, train_y, test_x, test_y, num_classes=10, source="centred_bn.data:load (generated)")


def sizes(num_train: int = 512, num_test: int = 256, **_: object) -> tuple[int, int]:
    """(train, test) samples, for normbench's data.train_subset / data.test_subset checks."""
    return num_train, num_test


load.sizes = sizes  # type: ignore[attr-defined]
