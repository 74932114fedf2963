"""Batch-independent norms: GroupNorm, LayerNorm (over C,H,W) and InstanceNorm.

On (N, C) inputs (LeNet's fully connected layers) GroupNorm normalizes each group of features and
LayerNorm all C features of a sample. InstanceNorm has no spatial extent to normalize over there: each
(sample, channel) holds one value, whose variance is 0, so true instance normalization would map every
activation to the bias. `in` therefore treats a feature vector as one instance and normalizes it over
its C features (the LayerNorm of that layer), keeping the per-channel affine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normbench.norms.batch import check_eps, check_momentum
from normbench.norms.momentum import resolve_momentum
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


def resolve_groups(norm: str, num_channels: int, groups: int | None, channels_per_group: int | None) -> int:
    """The group count from `groups` or `channels_per_group` (default: `default_groups`); ValueError if unusable."""
    if groups is not None and channels_per_group is not None:
        raise ValueError(f"norm '{norm}': give groups or channels_per_group, not both")
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


@register_norm("gn", aliases=("groupnorm", "group_norm"))
def group_norm(
    num_channels: int,
    groups: int | None = None,
    channels_per_group: int | None = None,
    eps: float = 1e-5,
    affine: bool = True,
) -> nn.Module:
    """GroupNorm; `groups` defaults to the largest divisor of C not above 32."""
    check_eps("gn", eps)
    return nn.GroupNorm(resolve_groups("gn", num_channels, groups, channels_per_group), num_channels, eps=eps,
                        affine=affine)


class LayerNorm2d(nn.GroupNorm):
    """LayerNorm over (C, H, W) per sample with a per-channel affine (GroupNorm with one group)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(1, num_channels, eps=eps, affine=affine)


@register_norm("ln", aliases=("layernorm", "layer_norm"))
def layer_norm(num_channels: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """LayerNorm over all of a sample's (C, H, W) features, per-channel affine."""
    check_eps("ln", eps)
    return LayerNorm2d(num_channels, eps=eps, affine=affine)


class InstanceNorm(nn.Module):
    """InstanceNorm over (H, W) per sample and channel; on (N, C) inputs a LayerNorm (module docstring)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = False):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_parameters(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return F.layer_norm(x, (x.shape[1],), self.weight, self.bias, self.eps)
        use_input_stats = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               use_input_stats, momentum if momentum is not None else 0.0, self.eps)

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
    check_eps("in", eps)
    momentum = resolve_momentum("in", momentum, keras_momentum)
    check_momentum("in", momentum)
    return InstanceNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                        track_running_stats=track_running_stats)
