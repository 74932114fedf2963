"""RMSNorm over channels (Zhang & Sennrich 2019), at every spatial position.

    y = x / sqrt(mean_c(x^2) + eps) * gamma (+ beta)

The statistic is taken over the C channels of one sample at one position, as RMSNorm over a token's
features in a transformer (and as torch.nn.RMSNorm over the last dim of a channels-last tensor). No mean
is subtracted; the gain gamma is per channel; the bias, absent from the original, is an option.
"""

from __future__ import annotations

import torch
from torch import nn

from normbench.norms.registry import register_norm


class RMSNorm2d(nn.Module):
    """RMSNorm over dim 1 of (N, C, ...) inputs (module docstring)."""

    applied_names = {"conv": "RMSNorm", "fc": "RMSNorm"}

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True, bias: bool = False):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if bias else None

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"RMSNorm2d expects an (N, C, ...) input, got {x.dim()}D")
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}, bias={self.bias is not None}"


@register_norm("rms", aliases=("rmsnorm", "rms_norm"))
def rms_norm(num_channels: int, eps: float = 1e-6, affine: bool = True, bias: bool = False) -> nn.Module:
    """RMSNorm over the channels at each position; `affine` = per-channel gain, `bias` = per-channel shift."""
    return RMSNorm2d(num_channels, eps=eps, affine=affine, bias=bias)
