"""Synchronized BatchNorm: batch statistics reduced over the data-parallel process group.

torch's `nn.SyncBatchNorm` raises on CPU tensors, and DDP refuses a CPU module that contains one, so it
cannot run (or be tested) without GPUs. `SyncBatchNorm` here is a `_BatchNorm` that reduces its
statistics with differentiable all-reduces (`all_reduce_sum`), which work on any backend (gloo on CPU
included):

    forward:  all-reduce [sum x, count]          -> global mean
              all-reduce sum (x - mean)^2          -> global biased variance
    backward: autograd runs the two all-reduces in reverse (the sums of the output gradient terms),
              exactly the two gradient sums torch's SyncBatchNorm function reduces.

Two passes, like F.batch_norm's own statistics, rather than one reduction of sum x and sum x^2, whose
difference loses precision when |mean| >> std. Batches may differ in size across ranks (counts are
reduced too). Outside a process group of more than one rank, and in eval mode, it is torch's
BatchNorm (F.batch_norm), as nn.SyncBatchNorm is: eval mode never synchronizes.

On GPUs, `train()` hands these layers to torch's nn.SyncBatchNorm (Lightning's `sync_batchnorm`, which
converts every `_BatchNorm`; see `normbench.run_facts.use_torch_sync_batchnorm`), whose fused CUDA kernels
are faster.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from normbench.norms.base import BatchNorm, ema_update_, update_factor
from normbench.norms.registry import BatchLayout, register_norm


def process_group_size(group: Any = None) -> int:
    """World size of `group` (default: the global group); 1 when no process group exists."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group if group is not None else dist.group.WORLD)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of `group`; the gradient of each rank's input is the sum of all ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Differentiable all-reduce (sum) over `group` (default: the global group).

    Written on `dist.all_reduce` rather than taken from torch.distributed.nn.functional, which torch
    deprecates in favour of a private module.
    """
    return _AllReduceSum.apply(tensor, group if group is not None else dist.group.WORLD)


class SyncBatchNorm(BatchNorm):
    """BatchNorm over the batch of every rank in `process_group` (default: all ranks), on any device.

    Equals torch's BatchNorm applied to the concatenation of all ranks' batches: output, input and
    parameter gradients (summed over ranks, as DDP's all-reduce does before averaging), and the running
    statistics (unbiased global variance, EMA or cumulative average like torch).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or process_group_size(self.process_group) == 1:
            return super().forward(x)
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        out_dtype = x.dtype
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in fp32 at least, as F.batch_norm
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_count = torch.full((1,), x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
        sums = all_reduce_sum(torch.cat([x.sum(dims), local_count]), group)
        count = sums[-1].detach()
        if count.item() < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(count.item())} "
                             "over the process group")
        mean = sums[:-1] / count
        centered = x - mean.reshape(shape)
        var = all_reduce_sum(centered.square().sum(dims), group) / count
        y = centered * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = torch.addcmul(self.bias.reshape(shape), y, self.weight.reshape(shape))
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        return y.to(out_dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None  # called only when tracking
        m = update_factor(self)
        ema_update_(self.running_mean, mean, m)
        ema_update_(self.running_var, var * (count / (count - 1)), m)


def sync_norm_batch_size(options: dict[str, Any], layout: BatchLayout) -> int:
    """Samples each sync_bn call normalizes over: the per-device batch times the (real and emulated) devices."""
    return layout.batch_size * layout.devices * layout.emulated_devices


@register_norm("sync_bn", aliases=("syncbn", "sync_batch_norm", "syncbatchnorm"), batch_stats=True,
               norm_batch_size=sync_norm_batch_size, syncs_devices=True)
def sync_batch_norm(
    num_channels: int,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> BatchNorm:
    """BatchNorm whose training statistics are all-reduced over the data-parallel ranks (CPU and GPU)."""
    return SyncBatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
