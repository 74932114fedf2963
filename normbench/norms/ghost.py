"""Ghost BatchNorm (Hoffer et al. 2017): BatchNorm over virtual sub-batches of `ghost_batch_size`.

It emulates, on one device, a data-parallel job whose devices each normalize their own share of the
batch. Ghost batch j holds samples j, j+k, j+2k, ... of a batch of k * ghost_batch_size: exactly how a
DistributedSampler deals a shuffled batch out to k devices, and a layout that lets one F.batch_norm
call normalize all ghost batches at once (the batch viewed as (ghost_batch_size, k * C, ...)).

Running statistics: one update per training batch with the average over its ghost batches of their
statistics (mean, unbiased variance), which equals averaging k replicas' running averages (the
running statistics a data-parallel job would have if it all-reduced its buffers). Eval mode is
BatchNorm with those statistics (or, with `track_running_stats=False`, with the eval batch's own).
A batch of at most `ghost_batch_size` samples is a single ghost batch, i.e. plain BatchNorm.
"""

from __future__ import annotations

from typing import Any

import torch

from normbench.errors import ConfigError
from normbench.norms.batch import BatchNorm, check_eps, check_momentum
from normbench.norms.momentum import resolve_momentum
from normbench.norms.per_device import ghost_batch_norm_forward
from normbench.norms.registry import register_norm


class GhostBatchNorm(BatchNorm):
    """BatchNorm over ghost batches of `ghost_batch_size` samples in training (module docstring)."""

    def __init__(self, num_features: int, ghost_batch_size: int = 32, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.ghost_batch_size = ghost_batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        n, g = x.shape[0], self.ghost_batch_size
        if not self.training or n <= g:
            return super().forward(x)
        if n % g:
            raise ValueError(f"norm 'ghost_bn': ghost_batch_size={g} does not divide the batch of {n} samples")
        return ghost_batch_norm_forward(self, x, n // g)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"


def ghost_batch_size_of(cfg: Any) -> int:
    """The ghost batch size of a run config, checked against `data.batch_size` (ConfigError if unusable).

    Registered as the entry's `norm_batch_size`, so config validation calls it before any work.
    """
    g, bs = int(cfg["norm"]["ghost_batch_size"]), int(cfg["data"]["batch_size"])
    if g >= bs:  # the whole batch is one ghost batch: plain BatchNorm
        return bs
    if bs % g:
        raise ConfigError(f"norm 'ghost_bn': ghost_batch_size={g} does not divide data.batch_size={bs}")
    if g < bs and not cfg["data"]["drop_last"]:
        raise ConfigError(f"norm 'ghost_bn' with ghost_batch_size={g} < data.batch_size={bs} needs "
                          "data.drop_last=true (the last partial batch would not split into ghost batches)")
    return g


def batch_size_of(cfg: Any) -> int:
    """Samples behind one running-statistics update: the whole micro-batch (its ghost batches averaged)."""
    return int(cfg["data"]["batch_size"])


@register_norm("ghost_bn", aliases=("ghostbn", "ghost_batch_norm", "gbn"), batch_stats=True, running_stats=True,
               norm_batch_size=ghost_batch_size_of, samples_per_update=batch_size_of)
def ghost_batch_norm(
    num_channels: int,
    ghost_batch_size: int = 32,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> BatchNorm:
    """BatchNorm over ghost batches of `ghost_batch_size` samples (Hoffer et al. 2017)."""
    if ghost_batch_size < 1:
        raise ValueError(f"norm 'ghost_bn': ghost_batch_size must be >= 1, got {ghost_batch_size}")
    momentum = resolve_momentum("ghost_bn", momentum, keras_momentum)
    check_momentum("ghost_bn", momentum)
    check_eps("ghost_bn", eps)
    return GhostBatchNorm(num_channels, ghost_batch_size, eps=eps, momentum=momentum, affine=affine,
                          track_running_stats=track_running_stats)
