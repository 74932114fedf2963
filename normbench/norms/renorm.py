"""Batch Renormalization (Ioffe 2017): BatchNorm corrected towards the running statistics.

In training, with batch statistics (mu_B, sigma_B = sqrt(var_B + eps)) and running ones
(mu, sigma = sqrt(running_var + eps)), both from before this batch's update:

    r = clip(sigma_B / sigma, 1 / r_max, r_max)      d = clip((mu_B - mu) / sigma, -d_max, d_max)
    y = gamma * (r * (x - mu_B) / sigma_B + d) + beta

with r and d treated as constants by the gradient. Eval mode uses the running statistics, as BatchNorm
does, and the running statistics follow torch's BatchNorm conventions (momentum, unbiased variance), so
with r_max = 1 and d_max = 0 the layer is exactly BatchNorm.

Ioffe's schedule starts as BatchNorm and relaxes the limits: r_max = 1 and d_max = 0 for `warmup_steps`,
then linear ramps reaching `r_max` after `r_max_ramp_steps` more steps and `d_max` after
`d_max_ramp_steps` (the paper: 5000 warm-up steps, r_max 3 at step 40k, d_max 5 at step 25k, i.e.
warmup_steps=5000, r_max_ramp_steps=35000, d_max_ramp_steps=20000). A step is a training batch this
layer normalized (its `num_batches_tracked`), i.e. optimizer steps x gradient-accumulation micro-batches.
The defaults apply the final limits from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from normbench.norms.base import BatchNorm, update_factor
from normbench.norms.registry import register_norm


def ramp(step: int, start: int, length: int) -> float:
    """Fraction of a linear ramp done at `step`: 0 before `start`, 1 from `start + length` on."""
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - start) / length)


class BatchRenorm(BatchNorm):
    """Batch Renormalization with Ioffe's r_max/d_max warm-up schedule (module docstring)."""

    # Always track_running_stats=True, so torch's Optional buffers are always tensors here.
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 0, r_max_ramp_steps: int = 0,
                 d_max_ramp_steps: int = 0):
        super().__init__(num_features, eps, momentum, affine, track_running_stats=True)
        self.r_max, self.d_max = r_max, d_max
        self.warmup_steps, self.r_max_ramp_steps, self.d_max_ramp_steps = warmup_steps, r_max_ramp_steps, \
            d_max_ramp_steps

    def limits(self, step: int | None = None) -> tuple[float, float]:
        """(r_max, d_max) in force at `step` (default: the layer's next training batch)."""
        t = int(self.num_batches_tracked) if step is None else step
        r = 1.0 + (self.r_max - 1.0) * ramp(t, self.warmup_steps, self.r_max_ramp_steps)
        d = self.d_max * ramp(t, self.warmup_steps, self.d_max_ramp_steps)
        return r, d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return super().forward(x)
        r_max, d_max = self.limits()
        shape = [1, -1] + [1] * (x.dim() - 2)
        with torch.no_grad():
            stats_x = x if x.dtype in (torch.float32, torch.float64) else x.float()
            var_b, mean_b = torch.var_mean(stats_x, dim=[0, *range(2, x.dim())], unbiased=False)
            sigma = torch.sqrt(self.running_var + self.eps)
            r = (torch.sqrt(var_b + self.eps) / sigma).clamp(1.0 / r_max, r_max)
            d = ((mean_b - self.running_mean) / sigma).clamp(-d_max, d_max)
        factor = update_factor(self)
        # Normalizes with the batch statistics and updates the running ones in torch's fused kernel.
        x_hat = F.batch_norm(x, self.running_mean, self.running_var, None, None, True, factor, self.eps)
        if self.affine:
            scale, shift = r * self.weight, d * self.weight + self.bias
        else:
            scale, shift = r, d
        return torch.addcmul(shift.reshape(shape), x_hat, scale.reshape(shape))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}, "
                f"r_max_ramp_steps={self.r_max_ramp_steps}, d_max_ramp_steps={self.d_max_ramp_steps}")


def check_renorm_options(options: dict) -> None:
    if options["r_max"] < 1:
        raise ValueError(f"norm 'brn': r_max must be >= 1, got {options['r_max']}")
    if options["d_max"] < 0:
        raise ValueError(f"norm 'brn': d_max must be >= 0, got {options['d_max']}")
    for key in ("warmup_steps", "r_max_ramp_steps", "d_max_ramp_steps"):
        if options[key] < 0:
            raise ValueError(f"norm 'brn': {key} must be >= 0, got {options[key]}")


@register_norm("brn", aliases=("batch_renorm", "batchrenorm", "renorm"), batch_stats=True, check=check_renorm_options)
def batch_renorm(
    num_channels: int,
    r_max: float = 3.0,
    d_max: float = 5.0,
    warmup_steps: int = 0,
    r_max_ramp_steps: int = 0,
    d_max_ramp_steps: int = 0,
    momentum: float | None = 0.1,
    keras_momentum: float | None = None,
    eps: float = 1e-5,
    affine: bool = True,
) -> BatchNorm:
    """Batch Renormalization (Ioffe 2017) with its r_max/d_max warm-up schedule."""
    return BatchRenorm(num_channels, eps=eps, momentum=momentum, affine=affine, r_max=r_max, d_max=d_max,
                       warmup_steps=warmup_steps, r_max_ramp_steps=r_max_ramp_steps,
                       d_max_ramp_steps=d_max_ramp_steps)
