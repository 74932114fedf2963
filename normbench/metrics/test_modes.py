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

`weighted_evaluate` runs each example alone (batch of one), so it works for every layer that normalizes
with its `running_mean`/`running_var` buffers in eval mode, whatever its own arithmetic; it costs one
batch-1 forward pass per test example, once per run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from normbench.metrics.accuracy import Evaluation, evaluate
from normbench.metrics.running_stats import _running_mean, running_stat_layers

MODES = ("ema", "precise", "batch", "adabn", "weighted")


def _example_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of a batch of one (1, C, ...) over its positions."""
    v = x.detach().float().reshape(x.shape[0], x.shape[1], -1)
    var, mean = torch.var_mean(v, dim=2, unbiased=False)
    return mean[0], var[0]


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


@torch.no_grad()
def weighted_evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], alpha: float,
                      ece_bins: int = 15) -> Evaluation:
    """Loss, accuracy and ECE with inference example weighing (module docstring).

    `model`'s running buffers must hold the population statistics (a `Calibration.model`); it is not
    modified (the pass runs on a deep copy). Each example is evaluated alone.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    net = copy.deepcopy(model)
    layers = running_stat_layers(net)
    population = {name: (None if _running_mean(m) is None else _running_mean(m).clone(), m.running_var.clone())
                  for name, m in layers}
    handles = []

    def make_hook(name: str):
        m_pop, v_pop = population[name]

        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            m_x, v_x = _example_moments(args[0])
            mean, var = mix_moments(m_x.to(v_pop.dtype), v_x.to(v_pop.dtype), m_pop, v_pop, alpha)
            if mean is not None:
                module.running_mean.copy_(mean)
            module.running_var.copy_(var)

        return hook

    for name, m in layers:
        handles.append(m.register_forward_pre_hook(make_hook(name)))

    def one_by_one(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([module(x[i: i + 1]) for i in range(x.shape[0])])

    try:
        return evaluate(net, batches, ece_bins=ece_bins, forward=one_by_one)
    finally:
        for h in handles:
            h.remove()
