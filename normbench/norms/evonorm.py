"""EvoNorm-B0 and EvoNorm-S0 (Liu et al. 2020): normalization-activation layers found by search.

    B0:  y = x / max(sqrt(s2_batch + eps), v * x + sqrt(s2_instance + eps)) * gamma + beta
    S0:  y = x * sigmoid(v * x) / sqrt(s2_group + eps) * gamma + beta

s2_batch is the variance over (N, H, W) per channel (biased in training; in eval the running average of
its unbiased value, torch's BatchNorm convention), s2_instance over (H, W) per sample and channel, s2_group
over the (C / groups, H, W) block of a sample, as in GroupNorm. v is a learned per-channel vector
initialized to 1, gamma to 1 and beta to 0. Both layers include their nonlinearity and replace the norm
and its activation in the paper: the entries declare `replaces_activation`, so a model built with
`norm_act=paper` (the ResNets' default) puts no activation after them; with `norm_act=always` (LeNet's
default) the model's activation still follows.

On (N, C) inputs an "instance" is the sample's feature vector (as normbench's `in` does), so s2_instance is
the variance over C; s2_group is the variance over a sample's C / groups features.
"""

from __future__ import annotations

import torch
from torch import nn

from normbench.norms.base import ema_update_, update_factor
from normbench.norms.group import check_group_options, resolve_groups
from normbench.norms.registry import register_norm


def _channel_shape(x: torch.Tensor) -> list[int]:
    return [1, -1] + [1] * (x.dim() - 2)


def instance_var(x: torch.Tensor) -> torch.Tensor:
    """Biased variance per sample and channel over the spatial dims; over C for (N, C) inputs."""
    if x.dim() == 2:
        return x.var(dim=1, unbiased=False, keepdim=True)
    return x.var(dim=tuple(range(2, x.dim())), unbiased=False, keepdim=True)


def group_var(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Biased variance per sample over each group of C / groups channels (and the spatial dims)."""
    n, c = x.shape[:2]
    var = x.reshape(n, groups, -1).var(dim=2, unbiased=False, keepdim=True)  # (N, G, 1)
    return var.expand(n, groups, c // groups).reshape(n, c, *([1] * (x.dim() - 2)))


class EvoNormB0(nn.Module):
    """EvoNorm-B0: batch variance (running average in eval) against an instance term (module docstring)."""

    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        nn.init.ones_(self.v)
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"EvoNormB0 expects an (N, C, ...) input, got {x.dim()}D")
        shape = _channel_shape(x)
        if self.training:
            n = x.numel() // x.shape[1]
            if n < 2:
                raise ValueError(f"Expected more than 1 value per channel when training, got {tuple(x.shape)}")
            var = x.var(dim=[0, *range(2, x.dim())], unbiased=False)
            with torch.no_grad():
                ema_update_(self.running_var, var * (n / (n - 1)), update_factor(self))
        else:
            var = self.running_var
        left = torch.sqrt(var + self.eps).reshape(shape)
        right = x * self.v.reshape(shape) + torch.sqrt(instance_var(x) + self.eps)
        y = x / torch.maximum(left, right)
        return torch.addcmul(self.bias.reshape(shape), y, self.weight.reshape(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class EvoNormS0(nn.Module):
    """EvoNorm-S0: a SiLU-like gate over group-normalized (unshifted) inputs (module docstring)."""

    def __init__(self, num_features: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.groups, self.eps = num_features, groups, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        nn.init.ones_(self.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"EvoNormS0 expects an (N, C, ...) input, got {x.dim()}D")
        shape = _channel_shape(x)
        y = x * torch.sigmoid(x * self.v.reshape(shape)) * torch.rsqrt(group_var(x, self.groups) + self.eps)
        return torch.addcmul(self.bias.reshape(shape), y, self.weight.reshape(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}"


@register_norm("evonorm_b0", aliases=("evonormb0", "evo_b0"), batch_stats=True, replaces_activation=True)
def evonorm_b0(
    num_channels: int,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
    eps: float = 1e-5,
) -> nn.Module:
    """EvoNorm-B0 (Liu et al. 2020): batch-dependent, with a running variance for eval."""
    return EvoNormB0(num_channels, eps=eps, momentum=momentum)


@register_norm("evonorm_s0", aliases=("evonorms0", "evo_s0"), check=check_group_options("evonorm_s0"),
               replaces_activation=True)
def evonorm_s0(
    num_channels: int,
    groups: int | None = None,
    channels_per_group: int | None = None,
    eps: float = 1e-5,
) -> nn.Module:
    """EvoNorm-S0 (Liu et al. 2020): batch-independent; groups as for `gn` (default: largest divisor <= 32)."""
    return EvoNormS0(num_channels, resolve_groups("evonorm_s0", num_channels, groups, channels_per_group), eps=eps)
