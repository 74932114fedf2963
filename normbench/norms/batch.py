"""BatchNorm: torch's layer (1d/2d picked from the input) and a from-scratch twin.

PyTorch conventions throughout: `momentum` is the weight of the *new* batch statistic in the running
average (0.1 here equals Keras' 0.9; `keras_momentum=0.9` is accepted instead, see momentum.py);
`momentum=None` is a cumulative moving average; the running
variance is updated with the unbiased (Bessel-corrected) batch variance while the output is
normalized with the biased one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normbench.norms.momentum import resolve_momentum
from normbench.norms.registry import register_norm


def check_momentum(norm: str, momentum: float | None) -> None:
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"norm '{norm}': momentum must be in [0, 1] or null (cumulative average), got {momentum}")


def check_eps(norm: str, eps: float) -> None:
    if not eps > 0:
        raise ValueError(f"norm '{norm}': eps must be > 0, got {eps}")


class BatchNorm(_BatchNorm):
    """torch BatchNorm that accepts (N, C), (N, C, L) and (N, C, H, W) inputs."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4, 5):
            raise ValueError(f"BatchNorm expects a 2D-5D input (N, C, ...), got {input.dim()}D")


def bn_samples_per_update(cfg) -> int:
    """Samples behind one running-statistics update of `bn` (for ema_horizon_samples).

    The micro-batch; with `accumulation_aware`, the accumulate_grad_batches micro-batches of a step.
    """
    from normbench.config import norm_batch_size

    k = cfg["trainer"]["accumulate_grad_batches"] if cfg["norm"].get("accumulation_aware") else 1
    return norm_batch_size(cfg) * k


@register_norm("bn", aliases=("batchnorm", "batch_norm", "bn2d"), batch_stats=True, running_stats=True,
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
    momentum = resolve_momentum("bn", momentum, keras_momentum)
    check_momentum("bn", momentum)
    check_eps("bn", eps)
    if accumulation_aware:
        from normbench.norms.accumulation import AccumulationAwareBatchNorm

        return AccumulationAwareBatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                                          track_running_stats=track_running_stats)
    return BatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                     track_running_stats=track_running_stats)


class ScratchBatchNorm(nn.Module):
    """BatchNorm written out in tensor ops (the d2l chapter's layer, with PyTorch's semantics).

    Matches nn.BatchNorm1d/2d in training output, gradients, running-statistics updates (EMA with
    `momentum`, cumulative average when `momentum is None`, unbiased running variance) and eval output.
    Buffers and parameters carry torch's names so state dicts are interchangeable.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
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
                    self.num_batches_tracked.add_(1)
                    m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                    self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                    self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


@register_norm("bn_scratch", aliases=("scratch_bn",), batch_stats=True, running_stats=True)
def scratch_batch_norm(
    num_channels: int,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """From-scratch BatchNorm in tensor ops; numerically equal to `bn`."""
    momentum = resolve_momentum("bn_scratch", momentum, keras_momentum)
    check_momentum("bn_scratch", momentum)
    check_eps("bn_scratch", eps)
    return ScratchBatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine,
                            track_running_stats=track_running_stats)
