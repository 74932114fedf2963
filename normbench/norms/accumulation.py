"""BatchNorm whose running statistics advance once per optimizer step under gradient accumulation.

With gradient accumulation (k micro-batches of b samples per optimizer step) plain BatchNorm updates
its running statistics k times per step, each from a b-sample batch: the EMA horizon in samples
shrinks by k relative to a true batch of k*b, and every update carries the noise of a small batch
(pytorch#46516, Lightning#17446). `AccumulationAwareBatchNorm` normalizes exactly like BatchNorm
(micro-batch statistics, so outputs and gradients are unchanged) but, once told that steps are being
accumulated, pools the micro-batch statistics of a step and updates the running statistics once,
from the pooled mean and unbiased variance of all k*b samples. With fixed weights its running
statistics then equal those of plain BatchNorm fed the k*b samples as one batch.

Protocol (duck-typed, see `normbench.training.accumulation.AccumulationBoundary`): setting
`defer_running_stats = True` starts pooling; `commit_running_stats()` applies the pooled update at
an optimizer-step boundary. Without a controller (`defer_running_stats` False, the default) the layer
is plain BatchNorm, so a model used outside normbench's trainer never silently stops updating.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from normbench.norms.base import BatchNorm, ema_update_, update_factor


class MomentAccumulator:
    """Per-channel count, mean and sum of squared deviations (M2), merged batch by batch in float64."""

    def __init__(self) -> None:
        self.count = 0.0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, count: float, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Merges a group of `count` elements per channel with biased variance `var` (Chan et al.)."""
        mean, var = mean.detach().double(), var.detach().double()
        if self.mean is None:
            self.count, self.mean, self.m2 = float(count), mean.clone(), var * count
            return
        assert self.m2 is not None  # set together with mean
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + var * count + delta.square() * (self.count * count / total)
        self.count = total

    @property
    def var(self) -> torch.Tensor:
        """Biased (population) variance."""
        assert self.m2 is not None, "no batches added"
        return self.m2 / self.count


class AccumulationAwareBatchNorm(BatchNorm):
    """BatchNorm with running statistics pooled over the micro-batches of an optimizer step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.defer_running_stats = False
        self._pending = MomentAccumulator()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and self.defer_running_stats):
            return super().forward(x)
        self._check_input_dim(x)
        # Micro-batch statistics come out of F.batch_norm itself: with momentum 1 the scratch buffers
        # end up holding the batch mean and unbiased variance, so no second pass over x is needed.
        assert self.running_mean is not None and self.running_var is not None
        mean = torch.zeros(self.num_features, device=x.device, dtype=self.running_mean.dtype)
        var = torch.ones(self.num_features, device=x.device, dtype=self.running_var.dtype)
        y = F.batch_norm(x, mean, var, self.weight, self.bias, True, 1.0, self.eps)
        n = x.numel() // x.shape[1]
        self._pending.add(n, mean, var * ((n - 1) / n))
        return y

    @property
    def pending_samples(self) -> float:
        """Elements per channel pooled since the last commit."""
        return self._pending.count

    @torch.no_grad()
    def commit_running_stats(self) -> None:
        """Applies one running-statistics update from the pooled micro-batches (no-op when none)."""
        pooled = self._pending
        if pooled.mean is None:
            return
        self._pending = MomentAccumulator()
        n = pooled.count
        unbiased = pooled.var * (n / (n - 1))
        assert self.running_mean is not None and self.running_var is not None  # pooled only when tracking
        m = update_factor(self)
        ema_update_(self.running_mean, pooled.mean, m)
        ema_update_(self.running_var, unbiased, m)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", accumulation_aware=True"
