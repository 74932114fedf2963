"""CentredBatchNorm: batch norm without the division by the batch standard deviation."""

from __future__ import annotations

import torch
from torch import nn


class CentredBatchNorm(nn.Module):
    """Subtracts the per-channel batch mean (a running mean in eval mode), then `weight * x + bias`.

    normbench calls it as `CentredBatchNorm(num_channels, **options)`: its keyword options (`momentum`, `eps`
    is absent on purpose: nothing is divided) become `norm.momentum=...` on the command line, checked against
    these annotations. The class attributes below are what normbench reads about the layer.

    Args:
        num_channels: channels C of an (N, C, H, W) or (N, C) input.
        momentum: weight of the new batch mean in the running mean (PyTorch's convention).
        affine: learn a per-channel scale and shift after the centring.
    """

    batch_stats = True  # it normalizes with a batch statistic (normbench refuses batches of one sample)
    replaces_activation = False  # an activation follows it as it follows BN

    def __init__(self, num_channels: int, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"norm centred_bn option 'momentum' must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.training:
            mean = x.mean(dim=dims)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
        else:
            mean = self.running_mean
        out = x - mean.view(shape)
        if self.weight is not None:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out
