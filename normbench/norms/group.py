"""Batch-independent norms: GroupNorm, LayerNorm (over C,H,W) and InstanceNorm.

On (N, C) inputs (LeNet's fully connected layers) GroupNorm normalizes each group of features and
LayerNorm all C features of a sample. InstanceNorm has no spatial extent to normalize over there: each
(sample, channel) holds one value, whose variance is 0, so true instance normalization would map every
activation to the bias. `in` therefore treats a feature vector as one instance and normalizes it over
its C features (the LayerNorm of that layer), keeping the per-channel affine. The layer says so
(`applied_names`), and a run records it per layer kind (`norm_layers`, `normbench.norms.naming`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normbench.norms.base import RunningStatsNorm, update_factor
from normbench.norms.registry import register_norm


def default_groups(num_channels: int, max_groups: int = 32) -> int:
    """Largest divisor of `num_channels` not above `max_groups` that leaves >= 2 channels per group.

    A group of one channel would make GroupNorm InstanceNorm (`in` is that); the GN paper's default of 32
    groups assumes layers far wider than LeNet's 6 and 16 channels (which get 3 and 8 groups here).
    A single channel is one group.
    """
    if num_channels < 2:
        return 1
    return max(g for g in range(1, min(num_channels // 2, max_groups) + 1) if num_channels % g == 0)


def check_group_options(norm: str):
    """The `check` of a norm with `groups`/`channels_per_group` options: at most one of them is given."""

    def check(options: dict) -> None:
        if options.get("groups") is not None and options.get("channels_per_group") is not None:
            raise ValueError(f"norm '{norm}': give groups or channels_per_group, not both")

    return check


def resolve_groups(norm: str, num_channels: int, groups: int | None, channels_per_group: int | None) -> int:
    """The group count from `groups` or `channels_per_group` (default: `default_groups`); ValueError if unusable."""
    check_group_options(norm)({"groups": groups, "channels_per_group": channels_per_group})
    if channels_per_group is not None:
        if channels_per_group < 1 or num_channels % channels_per_group:
            raise ValueError(f"norm '{norm}': channels_per_group={channels_per_group} does not divide "
                             f"num_channels={num_channels}")
        groups = num_channels // channels_per_group
    if groups is None:
        groups = default_groups(num_channels)
    if groups < 1 or num_channels % groups:
        raise ValueError(f"norm '{norm}': groups={groups} does not divide num_channels={num_channels}")
    return groups


@register_norm("gn", aliases=("groupnorm", "group_norm"), check=check_group_options("gn"))
def group_norm(
    num_channels: int,
    groups: int | None = None,
    channels_per_group: int | None = None,
    eps: float = 1e-5,
    affine: bool = True,
) -> nn.Module:
    """GroupNorm; `groups` defaults to the largest divisor of C not above 32."""
    return nn.GroupNorm(resolve_groups("gn", num_channels, groups, channels_per_group), num_channels, eps=eps,
                        affine=affine)


class LayerNorm2d(nn.GroupNorm):
    """LayerNorm over (C, H, W) per sample with a per-channel affine (GroupNorm with one group)."""

    applied_names = {"conv": "LayerNorm", "fc": "LayerNorm"}  # what it is, not how it is computed

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(1, num_channels, eps=eps, affine=affine)


@register_norm("ln", aliases=("layernorm", "layer_norm"))
def layer_norm(num_channels: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """LayerNorm over all of a sample's (C, H, W) features, per-channel affine."""
    return LayerNorm2d(num_channels, eps=eps, affine=affine)


class InstanceNorm(RunningStatsNorm):
    """InstanceNorm over (H, W) per sample and channel; on (N, C) inputs a LayerNorm (module docstring)."""

    # Its buffers hold the mean over instances of per-instance statistics (for the population-statistics pass).
    per_instance_stats = True
    applied_names = {"fc": "LayerNorm"}  # an (N, C) input is normalized over its C features

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return F.layer_norm(x, (x.shape[1],), self.weight, self.bias, self.eps)
        use_input_stats = self.training or not self.track_running_stats
        factor = self.momentum if self.momentum is not None else 0.0
        if self.training and self.track_running_stats:
            factor = update_factor(self)
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               use_input_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


@register_norm("in", aliases=("instancenorm", "instance_norm"))
def instance_norm(
    num_channels: int,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = False,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
) -> nn.Module:
    """InstanceNorm (per sample and channel over H, W); LayerNorm over C on (N, C) inputs."""
    return InstanceNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                        track_running_stats=track_running_stats)
