"""Per-device batch statistics: W data-parallel devices emulated on one.

In a data-parallel job without synchronised batch statistics (DDP with BatchNorm, the Group Normalization
paper's setup) each of W devices normalizes its own share of b samples while the optimizer sees all W * b.
`PerDeviceNorm(norm, devices=W)` reproduces that on one device: in training it splits a batch into W
interleaved slices (device j gets samples j, j + W, j + 2W, ...: how a DistributedSampler deals a shuffled
batch out, and ghost BN's layout) and applies `norm` to each slice on its own.

Running statistics: every slice starts from the same buffers, and after the step the floating-point
buffers hold the average over the slices of what each slice left (integer buffers such as
num_batches_tracked advance once). That is W replicas whose buffers are all-reduced after every step;
for BatchNorm it equals `ghost_bn` with `ghost_batch_size` = b.

A batch of fewer than W * b samples (a trailing partial batch, an evaluation pass in train mode) is split
into as many slices of about b samples as it holds (at least two samples each); eval mode calls `norm` on
the whole batch.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from normbench.norms.base import BatchNorm, update_factor


class PerDeviceNorm(nn.Module):
    """Applies `norm` to each of `devices` interleaved slices of a training batch (module docstring)."""

    per_device = True  # normbench.norms.naming names it after `norm`

    def __init__(self, norm: nn.Module, devices: int, per_device_batch: int | None = None):
        super().__init__()
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        if per_device_batch is not None and per_device_batch < 1:
            raise ValueError(f"per_device_batch must be >= 1, got {per_device_batch}")
        self.norm = norm
        self.devices = devices
        self.per_device_batch = per_device_batch

    @property
    def weight(self) -> torch.Tensor | None:
        """The wrapped norm's scale (model init code, e.g. zero-init of residual branches, sets it)."""
        return getattr(self.norm, "weight", None)

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.norm, "bias", None)

    def slices(self, n: int) -> int:
        """How many slices a batch of `n` samples is split into (fewer than `devices` for a short batch)."""
        share = max(2, self.per_device_batch or 2)
        return max(1, min(self.devices, n // share))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.slices(x.shape[0]) if self.training else 1
        if k == 1:
            return self.norm(x)
        hooked = self.norm._forward_pre_hooks or self.norm._forward_hooks  # e.g. a population-statistics pass
        if type(self.norm) is BatchNorm and x.shape[0] % k == 0 and not hooked:
            return ghost_batch_norm_forward(self.norm, x, k)
        return self._sliced(x, k)

    def _sliced(self, x: torch.Tensor, k: int) -> torch.Tensor:
        holders = [m for m in self.norm.modules() if any(b is not None for b in m._buffers.values())]
        start = {(i, name): b for i, m in enumerate(holders) for name, b in m._buffers.items() if b is not None}
        outs, ends = [], []
        for j in range(k):
            # A fresh copy of the starting buffers per slice: in-place updates never touch a tensor that
            # an earlier slice's autograd graph may have saved.
            for (i, name), b in start.items():
                holders[i]._buffers[name] = b.clone()
            outs.append(self.norm(x[j::k]))
            # The norm's forward replaces its buffers, never removes them: each is a tensor again.
            ends.append({key: cast(torch.Tensor, holders[key[0]]._buffers[key[1]]) for key in start})
        with torch.no_grad():
            for (i, name), b in start.items():
                if b.is_floating_point():
                    holders[i]._buffers[name] = torch.stack([e[(i, name)] for e in ends]).mean(0)
                else:
                    holders[i]._buffers[name] = ends[0][(i, name)]
        order = torch.cat([torch.arange(j, x.shape[0], k, device=x.device) for j in range(k)])
        return torch.cat(outs)[torch.argsort(order)]

    def extra_repr(self) -> str:
        return f"devices={self.devices}, per_device_batch={self.per_device_batch}"


def ghost_batch_norm_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, k: int) -> torch.Tensor:
    """BatchNorm of `bn` over the k interleaved sub-batches of `x` in one F.batch_norm call (training mode).

    The batch is viewed as (n / k, k * C, ...), so sub-batch j (samples j, j + k, ...) is channel block j.
    The running statistics get one update: the average over the sub-batches of their statistics.
    """
    import torch.nn.functional as F

    n, c = x.shape[0], x.shape[1]
    g = n // k
    running_mean = running_var = None
    factor = 0.0
    if bn.track_running_stats:
        assert bn.running_mean is not None and bn.running_var is not None  # torch keeps them when tracking
        factor = update_factor(bn)
        running_mean, running_var = bn.running_mean.repeat(k), bn.running_var.repeat(k)
    weight = bn.weight.repeat(k) if bn.affine else None
    bias = bn.bias.repeat(k) if bn.affine else None
    y = F.batch_norm(x.reshape(g, k * c, *x.shape[2:]), running_mean, running_var, weight, bias, True, factor, bn.eps)
    if bn.track_running_stats:
        assert bn.running_mean is not None and bn.running_var is not None
        assert running_mean is not None and running_var is not None
        with torch.no_grad():
            bn.running_mean.copy_(running_mean.view(k, c).mean(0))
            bn.running_var.copy_(running_var.view(k, c).mean(0))
    return y.reshape(x.shape)


def per_device(factory, devices: int, per_device_batch: int | None = None):
    """Wraps a `(num_channels) -> nn.Module` norm factory so each layer normalizes per emulated device."""
    if devices == 1:
        return factory

    def wrapped(num_channels: int) -> nn.Module:
        return PerDeviceNorm(factory(num_channels), devices, per_device_batch)

    for attr in ("norm_name", "options"):
        if hasattr(factory, attr):
            setattr(wrapped, attr, getattr(factory, attr))
    return wrapped
