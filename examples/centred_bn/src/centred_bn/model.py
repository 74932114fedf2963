"""A normbench model builder: `build(norm, num_classes, in_channels, image_size, **options)`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def build(norm: Callable[[int], nn.Module], num_classes: int, in_channels: int, image_size: int,
          hidden: int = 64) -> nn.Module:
    """Flatten -> Linear(hidden) -> norm(hidden) -> ReLU -> Linear(num_classes).

    `norm` is the factory normbench passes (it builds the run's norm for a channel count); `hidden` is an
    option, `model.hidden=...` on the command line.
    """
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden), norm(hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))
