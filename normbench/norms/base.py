"""Building blocks shared by the norm layers: torch's BatchNorm for any (N, C, ...) input, the running-statistics
buffers and affine parameters, and the EMA update.

Every layer that keeps running statistics follows torch's BatchNorm: buffers `running_mean` (zeros),
`running_var` (ones) and `num_batches_tracked`; an update weights the new statistic by `momentum`, or by
1 / (updates so far) when `momentum` is None (the cumulative average); the running variance takes the
unbiased batch variance.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class BatchNorm(_BatchNorm):
    """torch BatchNorm that accepts (N, C), (N, C, L) and (N, C, H, W) inputs."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4, 5):
            raise ValueError(f"BatchNorm expects a 2D-5D input (N, C, ...), got {input.dim()}D")


def update_factor(layer: nn.Module) -> float:
    """Counts one running-statistics update of `layer` and returns the weight of its new statistic.

    `layer.momentum`, or 1 / `num_batches_tracked` (after counting this update) when it is None.
    """
    # nn.Module's attribute typing cannot see a layer's buffer and float attribute: name their types.
    tracked, momentum = cast(torch.Tensor, layer.num_batches_tracked), cast("float | None", layer.momentum)
    tracked.add_(1)
    return 1.0 / float(tracked) if momentum is None else momentum


@torch.no_grad()
def ema_update_(running: torch.Tensor, value: torch.Tensor, factor: float) -> None:
    """running <- (1 - factor) running + factor value, in place (in `running`'s dtype)."""
    running.mul_(1 - factor).add_(value.detach().to(running.dtype), alpha=factor)


class RunningStatsNorm(nn.Module):
    """A norm layer with torch's parameter and buffer layout (state dicts interchangeable with BatchNorm's).

    `weight` (ones) and `bias` (zeros) when `affine`; `running_mean`, `running_var` and `num_batches_tracked`
    when `track_running_stats` (else those names hold None).
    """

    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    num_batches_tracked: torch.Tensor | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
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
            assert self.running_mean is not None and self.running_var is not None and \
                self.num_batches_tracked is not None, "track_running_stats layers hold their buffers"
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)
