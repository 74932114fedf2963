"""Frozen BatchNorm: fixed statistics and affine, the same computation in train and eval mode.

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias

All four are buffers, so nothing is learned and training never updates them (as torchvision's
FrozenBatchNorm2d, but for any (N, C, ...) input). Built fresh it is the identity up to 1/sqrt(1 + eps);
`FrozenBatchNorm.from_batchnorm(bn)` or loading a BatchNorm state dict freezes a trained layer.
"""

from __future__ import annotations

import torch
from torch import nn

from normbench.norms.registry import register_norm


class FrozenBatchNorm(nn.Module):
    """BatchNorm with frozen statistics and affine (module docstring); loads BatchNorm state dicts."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._NormBase) -> FrozenBatchNorm:
        """A frozen copy of `bn`'s current running statistics and affine."""
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("FrozenBatchNorm.from_batchnorm needs a BatchNorm that tracks running statistics")
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
            if bn.weight is not None:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A BatchNorm state dict also holds num_batches_tracked, which a frozen layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"FrozenBatchNorm expects an (N, C, ...) input, got {x.dim()}D")
        shape = [1, -1] + [1] * (x.dim() - 2)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


@register_norm("frozen_bn", aliases=("frozenbn", "frozen_batch_norm", "frozenbatchnorm"))
def frozen_batch_norm(num_channels: int, eps: float = 1e-5) -> nn.Module:
    """BatchNorm with fixed statistics and affine (buffers; identity until loaded from a trained BN)."""
    return FrozenBatchNorm(num_channels, eps=eps)
