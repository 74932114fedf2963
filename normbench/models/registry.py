"""The model registry and the placeholder that marks a normalization site."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from normbench.norms.naming import LayerKind, input_kind
from normbench.registry import Registry

# Builders are called as fn(norm, num_classes, in_channels, image_size, **options).
# Plugins (normbench.plugins: `model=pkg.mod:build`, entry points of normbench.models) may declare `check`.
MODELS = Registry("model", skip_params=4, plugin_group="normbench.models", plugin_meta={"check": None},
                  positional=("norm", "num_classes", "in_channels", "image_size"))


def register_model(name: str, *, aliases: tuple[str, ...] = (), **meta):
    return MODELS.register(name, aliases=aliases, **meta)


class NormSlot(nn.Module):
    """Stands where a norm goes until build_model replaces it; records the channel count.

    Its forward passes the input through and notes the layer kind it was fed (`conv` for (N, C, ...) maps,
    `fc` for (N, C) features): build_model runs one forward through the slots to learn each site's kind.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = int(num_channels)
        self.kind: LayerKind | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.kind = input_kind(x.dim())
        return x


def slot_factory(replaces_activation: bool) -> Callable[[int], NormSlot]:
    """The norm factory a model is built with: NormSlots, and whether the real norm replaces its activation
    (read by `normbench.models.norm_act.activation_after`)."""

    def make(num_channels: int) -> NormSlot:
        return NormSlot(num_channels)

    make.replaces_activation = replaces_activation  # type: ignore[attr-defined]
    return make
