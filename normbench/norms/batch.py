"""BatchNorm: torch's layer (1d/2d picked from the input) and a from-scratch twin.

PyTorch conventions throughout: `momentum` is the weight of the *new* batch statistic in the running
average (0.1 here equals Keras' 0.9; `keras_momentum=0.9` is accepted instead, see options.py);
`momentum=None` is a cumulative moving average; the running
variance is updated with the unbiased (Bessel-corrected) batch variance while the output is
normalized with the biased one.
"""

from __future__ import annotations

import torch
from torch import nn

from normbench.norms.accumulation import AccumulationAwareBatchNorm
from normbench.norms.base import BatchNorm, RunningStatsNorm, ema_update_, update_factor
from normbench.norms.registry import BatchLayout, register_norm


def bn_samples_per_update(options: dict, layout: BatchLayout) -> int:
    """Samples behind one running-statistics update of `bn` (the EMA horizon's unit).

    The micro-batch; with `accumulation_aware`, the `layout.accumulate` micro-batches of a step.
    """
    return layout.batch_size * (layout.accumulate if options.get("accumulation_aware") else 1)


@register_norm("bn", aliases=("batchnorm", "batch_norm", "bn2d"), batch_stats=True,
               samples_per_update=bn_samples_per_update)
def batch_norm(
    num_channels: int,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
    accumulation_aware: bool = False,
) -> nn.Module:
    """torch BatchNorm (F.batch_norm), dimension picked from the input.

    `accumulation_aware`: under gradient accumulation, update the running statistics once per
    optimizer step from the pooled micro-batches (normbench.norms.accumulation).
    """
    if accumulation_aware:
        return AccumulationAwareBatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                                          track_running_stats=track_running_stats)
    return BatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                     track_running_stats=track_running_stats)


class ScratchBatchNorm(RunningStatsNorm):
    """BatchNorm written out in tensor ops (the d2l chapter's layer, with PyTorch's semantics).

    Matches nn.BatchNorm1d/2d in training output, gradients, running-statistics updates (EMA with
    `momentum`, cumulative average when `momentum is None`, unbiased running variance) and eval output.
    Buffers and parameters carry torch's names so state dicts are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"ScratchBatchNorm expects (N, C, ...) input, got {x.dim()}D")
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            n = x.numel() // x.shape[1]
            if n < 2:
                raise ValueError(f"Expected more than 1 value per channel when training, got {tuple(x.shape)}")
            mean = x.mean(dim=dims)
            var = ((x - mean.reshape(shape)) ** 2).mean(dim=dims)
            if self.training and self.track_running_stats:
                with torch.no_grad():
                    assert self.running_mean is not None and self.running_var is not None
                    m = update_factor(self)
                    ema_update_(self.running_mean, mean, m)
                    ema_update_(self.running_var, var * (n / (n - 1)), m)
        else:
            assert self.running_mean is not None and self.running_var is not None
            mean, var = self.running_mean, self.running_var
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


@register_norm("bn_scratch", aliases=("scratch_bn",), batch_stats=True)
def scratch_batch_norm(
    num_channels: int,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """From-scratch BatchNorm in tensor ops; numerically equal to `bn`."""
    return ScratchBatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                            track_running_stats=track_running_stats)
