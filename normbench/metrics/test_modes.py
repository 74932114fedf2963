"""Test-time normalization modes: which statistics the running-statistics layers use at test time.

A trained network with BatchNorm-type layers can be evaluated with several statistics; each mode is a
named figure `test_acc_<mode>` (and `test_ece_<mode>`) in every run's record
(`normbench.training.measurements`):

    ema       the running averages (PyTorch's eval mode)
    precise   population statistics of the training data under the final weights (precise BN)
    batch     each test batch of the training batch size normalized with its own statistics (train mode)
    adabn     population statistics re-estimated on the test set itself (Adaptive BN, Li et al. 2016):
              the precise-BN pass run over test images
    weighted  inference example weighing (Summers & Dinneen, "Four things everyone should know to improve
              batch normalization", 2020): each test example is normalized with the moments of the mixture
              of its own statistics (weight alpha) and the population statistics (weight 1 - alpha), as if
              it were an alpha share of a batch drawn from the population:
                  mean = alpha m_x + (1 - alpha) m_pop
                  var  = alpha v_x + (1 - alpha) v_pop + alpha (1 - alpha) (m_x - m_pop)^2
              where m_x, v_x are the example's per-channel mean and biased variance over its spatial
              positions (a single value and 0 for (N, C) inputs). alpha = 0 is precise BN exactly.

`weighted_evaluate` feeds whole batches through an exact change of variables for layers with BatchNorm's
eval arithmetic, after checking it against evaluating each example alone with its mixed moments written
into the layer's buffers (which works whatever the layer's arithmetic, at one batch-1 forward pass per
test example); layers for which the check fails are evaluated that way.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from normbench.metrics.accuracy import Evaluation, evaluate
from normbench.metrics.running_stats import DEFAULT_EPS, _running_mean, running_stat_layers


def mix_moments(m_x: torch.Tensor, v_x: torch.Tensor, m_pop: torch.Tensor | None, v_pop: torch.Tensor,
                alpha: float) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean and variance of the mixture alpha * N(m_x, v_x) + (1 - alpha) * N(m_pop, v_pop).

    Without a population mean (a layer that only rescales) the variances alone are mixed.
    """
    if m_pop is None:
        return None, alpha * v_x + (1 - alpha) * v_pop
    mean = alpha * m_x + (1 - alpha) * m_pop
    var = alpha * v_x + (1 - alpha) * v_pop + alpha * (1 - alpha) * (m_x - m_pop).square()
    return mean, var


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(example, channel) mean and biased variance over positions: (N, C) each (a vector: x and 0)."""
    v = x.detach().float().reshape(x.shape[0], x.shape[1], -1)
    var, mean = torch.var_mean(v, dim=2, unbiased=False)
    return mean, var


class _Weighing:
    """Forward pre-hooks that make every running-statistics layer normalize with the mixed moments.

    `per_example=True`: the layer's buffers are overwritten with one example's mixed moments before each
    call (batches of one; works whatever the layer's arithmetic). Otherwise the whole batch is fed through
    the layer's own eval path after the affine change of variables x' = m_run + (x - m_i) s_i,
    s_i = sqrt((v_run + eps) / (v_i + eps)), so that a layer computing (x' - m_run) / sqrt(v_run + eps)
    computes (x - m_i) / sqrt(v_i + eps): exact for that (BatchNorm's) eval arithmetic, and checked
    against the per-example path before use.
    """

    def __init__(self, net: nn.Module, alpha: float) -> None:
        self.alpha = alpha
        self.layers = running_stat_layers(net)
        # cast: a buffer, which nn.Module's attribute typing cannot tell from a submodule
        self.population = {name: (None if (mean := _running_mean(m)) is None else mean.clone(),
                                   cast(torch.Tensor, m.running_var).clone()) for name, m in self.layers}
        self.per_example = True
        self.handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in self.layers]

    def _hook(self, name: str):
        m_pop, v_pop = self.population[name]

        def hook(module: nn.Module, args: tuple[Any, ...]):
            x = args[0]
            m_x, v_x = _moments(x)
            mean, var = mix_moments(m_x.to(v_pop.dtype), v_x.to(v_pop.dtype), m_pop, v_pop, self.alpha)
            if self.per_example:
                if mean is not None:
                    cast(torch.Tensor, module.running_mean).copy_(mean[0])
                cast(torch.Tensor, module.running_var).copy_(var[0])
                return None
            eps = float(getattr(module, "eps", DEFAULT_EPS))
            shape = (*x.shape[:2], *([1] * (x.dim() - 2)))
            scale = torch.sqrt((v_pop + eps) / (var + eps)).to(x.dtype).reshape(shape)
            if mean is None or m_pop is None:  # both None together (a layer without a running mean)
                return (x * scale, *args[1:])
            centre = m_pop.to(x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
            return (centre + (x - mean.to(x.dtype).reshape(shape)) * scale, *args[1:])

        return hook

    def restore(self) -> None:
        """Population statistics back into every layer's buffers (the per-example path overwrites them)."""
        for name, m in self.layers:
            m_pop, v_pop = self.population[name]
            if m_pop is not None:
                cast(torch.Tensor, m.running_mean).copy_(m_pop)
            cast(torch.Tensor, m.running_var).copy_(v_pop)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass(frozen=True)
class WeightedEvaluation(Evaluation):
    """An Evaluation with how the example weighing ran: `batched` or `per_example`."""

    method: str = "per_example"


@torch.no_grad()
def weighted_evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], alpha: float,
                      ece_bins: int = 15, *, check: int = 16) -> WeightedEvaluation:
    """Loss, accuracy and ECE with inference example weighing (module docstring); `method` says how.

    `model`'s running buffers must hold the population statistics (a `Calibration.model`); it is not
    modified (the pass runs on a deep copy). The batched change of variables (`_Weighing`) is used when
    its logits on the first `check` examples match the one-example-at-a-time evaluation (relative
    tolerance 1e-4); otherwise (or with `check=0`) every example is evaluated alone (`method`: per_example).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    net = copy.deepcopy(model).eval()
    weighing = _Weighing(net, alpha)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("weighted_evaluate() got no batches")

    def one_by_one(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        weighing.per_example = True
        return torch.cat([module(x[i: i + 1]) for i in range(x.shape[0])])

    def batched(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if weighing.per_example:
            weighing.restore()
            weighing.per_example = False
        return module(x)

    try:
        vectorized = False
        if check > 0:  # check=0: every example alone
            probe = first[0][:check]
            exact = one_by_one(net, probe).double()
            fast = batched(net, probe).double()
            vectorized = bool(torch.allclose(fast, exact, rtol=1e-4, atol=1e-4 * float(exact.abs().max()) + 1e-6))
        forward = batched if vectorized else one_by_one

        def all_batches():
            yield first
            yield from batches

        scores = evaluate(net, all_batches(), ece_bins=ece_bins, forward=forward)
    finally:
        weighing.remove()
    return WeightedEvaluation(scores.loss, scores.acc, scores.ece, "batched" if vectorized else "per_example")
