"""Running-statistics calibration: population statistics of every norm layer and the EMA's error.

A norm layer that keeps running statistics (a `running_var` buffer that is not None, usually with a
`running_mean`: BatchNorm and its variants, InstanceNorm with tracking, EvoNorm-B0's variance) normalizes
with them in eval mode. They
are an exponential moving average (EMA) of per-batch statistics taken while the weights moved, so they
lag behind and carry noise. This module measures how far they are from the *population* statistics
of the final weights, the precise-BN estimate of fvcore's `update_bn_stats` and of Wu & Johnson,
"Rethinking 'Batch' in BatchNorm" (2021):

- One no-grad pass over training batches with forward pre-hooks on every such layer's input. Each
  batch adds its per-channel sums of (shifted) values and squares to float64 totals, so batches count
  by their element count (a batch of 3 samples weighs 3/7 of a 3+4 split; an unweighted mean of batch
  means would not) and there is no Bessel correction: the result equals the mean and biased variance
  over all the elements the layer saw, as if they had come in one batch.
- Mode of the pass: the measured copy runs in train mode, exactly as in training, so every upstream
  norm normalizes with the statistics of the current (training-size) batch. Each layer's population
  statistics are then those of the inputs it saw during training, which is the quantity its EMA
  estimates; the EMA error measured here is the estimator's lag and noise, not a train/eval shift.
  This is PreciseBN's protocol (fvcore runs the model in train mode). The alternative, recalibrating
  layer by layer with the layers above in eval mode, needs one pass per layer.
- InstanceNorm-style layers (statistics per sample and channel) keep the *mean over instances* of the
  per-instance mean and variance in their buffers; their population statistics are defined the same
  way (a count-weighted mean of per-instance biased variances). On (N, C) inputs normbench's
  InstanceNorm is a LayerNorm that never reads its buffers; such a layer reports null figures.

The measuring model is a deep copy: the trained model's buffers are never touched.

Per-layer figures, with var meaning the variance plus the layer's eps (what the layer divides by):
    mean_rel_err   ||mu_ema - mu_pop||_2 / (||mu_pop||_2 + 1e-8)
    var_log_ratio  mean over channels of |log(var_ema / var_pop)|
    kl             mean over channels of KL(N(mu_pop, var_pop) || N(mu_ema, var_ema))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

REL_EPS = 1e-8  # keeps mean_rel_err finite for a layer whose population mean is exactly zero
DEFAULT_EPS = 1e-5  # for layers without an `eps` attribute (torch's BatchNorm default)
FOLD_EVERY = 32  # batches of (N, C) partial sums kept before folding them into the float64 totals
FIGURES = ("mean_rel_err", "var_log_ratio", "kl")


def has_running_stats(module: nn.Module) -> bool:
    """True when `module` keeps running statistics: a non-None `running_var` buffer.

    `running_mean` usually comes with it; a layer that only rescales (EvoNorm-B0) keeps the variance alone.
    """
    return isinstance(getattr(module, "running_var", None), torch.Tensor)


def _running_mean(module: nn.Module) -> torch.Tensor | None:
    mean = getattr(module, "running_mean", None)
    return mean if isinstance(mean, torch.Tensor) else None


def running_stat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer with running statistics, in the order of `model.norm_sites`.

    Models from `normbench.models.build_model` list their norm sites; a site may be a wrapper holding
    the layer with the buffers, so each site is searched. Other models are searched whole.
    """
    sites = getattr(model, "norm_sites", None)
    roots = [(s, model.get_submodule(s)) for s in sites] if sites is not None else [("", model)]
    out, seen = [], set()
    for root_name, root in roots:
        for sub_name, m in root.named_modules():
            name = ".".join(p for p in (root_name, sub_name) if p)
            if has_running_stats(m) and id(m) not in seen:
                seen.add(id(m))
                out.append((name, m))
    return out


def _per_instance(module: nn.Module) -> bool:
    """Statistics per sample and channel: torch's InstanceNorm, or a layer that says so (`per_instance_stats`)."""
    return bool(getattr(module, "per_instance_stats", False)) or isinstance(module,
                                                                             nn.modules.instancenorm._InstanceNorm)


@dataclass
class PopulationStats:
    """A layer's population statistics: `count` elements per channel, mean and biased variance (float64).

    `mean`/`var` are None when the layer has running statistics it never uses on the inputs it got.
    """

    count: float
    mean: torch.Tensor | None
    var: torch.Tensor | None


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _ChannelMoments:
    """Per-channel moments over all non-channel dimensions of a layer's inputs, batch after batch.

    Shifted sums: each batch contributes per-(sample, channel) sums of (x - s) and (x - s)^2, s being
    the first batch's channel means, so the totals do not cancel catastrophically when |mean| >> std.
    Sums run over the contiguous spatial axis (fast on CPU, unlike torch.var_mean over the strided
    (N, H, W) dims); the (N, C) partial sums are kept and added up over samples in float64 at the end.
    Four tensor ops per batch keep the hook cheap next to the layer's own work.
    """

    def __init__(self) -> None:
        self.shift: torch.Tensor | None = None
        self._s1: list[torch.Tensor] = []
        self._s2: list[torch.Tensor] = []
        self._t1: torch.Tensor | float = 0.0  # float64 totals of the partial sums folded so far
        self._t2: torch.Tensor | float = 0.0
        self._count = 0

    def add_input(self, x: torch.Tensor) -> bool:
        v = _as_float(x.detach()).reshape(x.shape[0], x.shape[1], -1)  # (N, C, L)
        if self.shift is None:
            self.shift = (v.sum(2).double().sum(0) / (v.shape[0] * v.shape[2])).to(v.dtype)[:, None]
        d = v - self.shift
        self._s1.append(d.sum(2))
        self._s2.append(d.mul_(d).sum(2))
        self._count += v.shape[0] * v.shape[2]
        if len(self._s1) >= FOLD_EVERY:
            self._fold()
        return True

    def _fold(self) -> None:
        if self._s1:
            self._t1 = self._t1 + torch.cat(self._s1).double().sum(0)
            self._t2 = self._t2 + torch.cat(self._s2).double().sum(0)
            self._s1, self._s2 = [], []

    @property
    def count(self) -> float:
        return float(self._count)

    def _totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._fold()
        assert isinstance(self._t1, torch.Tensor) and isinstance(self._t2, torch.Tensor), "no input added"
        return self._t1 / self._count, self._t2 / self._count

    @property
    def mean(self) -> torch.Tensor:
        assert self.shift is not None, "no input added"
        return self.shift[:, 0].double() + self._totals()[0]

    @property
    def var(self) -> torch.Tensor:
        """Biased (population) variance."""
        m1, m2 = self._totals()
        return (m2 - m1.square()).clamp_min(0.0)


class _InstanceMoments:
    """Per-(sample, channel) mean and biased variance, averaged over samples (instances of equal size)."""

    def __init__(self) -> None:
        self.count = 0.0
        self.instances = 0
        self.mean_sum: torch.Tensor | None = None
        self.var_sum: torch.Tensor | None = None

    def add_input(self, x: torch.Tensor) -> bool:
        if x.dim() < 3:
            return False  # normbench's InstanceNorm is a LayerNorm on vectors and never reads its buffers
        var, mean = torch.var_mean(_as_float(x.detach()).flatten(2), dim=2, unbiased=False)
        if self.mean_sum is None or self.var_sum is None:  # the first input (both are set together)
            self.mean_sum = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self.var_sum = torch.zeros_like(self.mean_sum)
        self.mean_sum += mean.double().sum(0)
        self.var_sum += var.double().sum(0)
        self.count += x.shape[0] * math.prod(x.shape[2:])
        self.instances += x.shape[0]
        return True

    @property
    def mean(self) -> torch.Tensor:
        assert self.mean_sum is not None, "no input added"
        return self.mean_sum / self.instances

    @property
    def var(self) -> torch.Tensor:
        assert self.var_sum is not None, "no input added"
        return self.var_sum / self.instances


@torch.no_grad()
def population_statistics(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]],
                          layers: list[tuple[str, nn.Module]] | None = None) -> dict[str, PopulationStats]:
    """Population mean and biased variance of the inputs of every running-statistics layer.

    Runs `model` in train mode over `batches` (x, y) with forward pre-hooks on the layers. The model's
    running buffers are updated by the pass, so give it a copy (`calibrate` does).

    Args:
        model: the network to measure (it is left in the mode it was in, but its buffers change).
        batches: (inputs, labels) pairs; batches may differ in size.
        layers: (name, module) pairs to measure; default: `running_stat_layers(model)`.

    Raises:
        ValueError: no batch arrived, or a layer received no input during the pass.
    """
    layers = running_stat_layers(model) if layers is None else layers
    accs = {name: (_InstanceMoments() if _per_instance(m) else _ChannelMoments()) for name, m in layers}
    used: set[str] = set()
    ignored: set[str] = set()
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            (used if accs[name].add_input(args[0]) else ignored).add(name)

        return hook

    for name, m in layers:
        handles.append(m.register_forward_pre_hook(make_hook(name)))
    was_training = model.training
    model.train()
    n_batches = 0
    try:
        for x, _ in batches:
            model(x)
            n_batches += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("population statistics need at least one batch; got none")
    out = {}
    for name, _ in layers:
        if name in used:
            out[name] = PopulationStats(accs[name].count, accs[name].mean, accs[name].var)
        elif name in ignored:
            out[name] = PopulationStats(0.0, None, None)
        else:
            raise ValueError(f"layer '{name}' received no input during the population-statistics pass")
    return out


def layer_errors(mu_ema: torch.Tensor | None, var_ema: torch.Tensor, mu_pop: torch.Tensor, var_pop: torch.Tensor,
                 eps: float = 0.0) -> dict[str, float | None]:
    """Calibration figures of one layer (module docstring), with `eps` added to both variances.

    `mu_ema=None` (a layer without a running mean, which does not center): mean_rel_err is null and the
    KL compares N(mu_pop, var_pop) with N(mu_pop, var_ema), the variance mismatch alone.
    """
    var_ema, mu_pop, var_pop = var_ema.double() + eps, mu_pop.double(), var_pop.double() + eps
    log_ratio = torch.log(var_ema / var_pop)
    if mu_ema is None:
        rel, shift2 = None, torch.zeros_like(mu_pop)
    else:
        mu_ema = mu_ema.double()
        rel = float((mu_ema - mu_pop).norm() / (mu_pop.norm() + REL_EPS))
        shift2 = (mu_pop - mu_ema).square()
    kl = 0.5 * (log_ratio + (var_pop + shift2) / var_ema - 1.0)
    return {"mean_rel_err": rel, "var_log_ratio": float(log_ratio.abs().mean()), "kl": float(kl.mean())}


def aggregate(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over layers and worst layer of each figure; null when no layer has figures."""
    rows = [r for r in layers if r["kl"] is not None]
    out: dict[str, Any] = {"calib_layers": len(rows)}
    for fig in FIGURES:
        values = [r[fig] for r in rows if r[fig] is not None]
        out[f"calib_{fig}"] = sum(values) / len(values) if values else None
        out[f"calib_{fig}_worst"] = max(values) if values else None
    out["calib_worst_layer"] = max(rows, key=lambda r: r["kl"])["layer"] if rows else None
    return out


@dataclass
class Calibration:
    """Result of `calibrate`: per-layer rows, their aggregate, and the model with population statistics.

    `model` is a deep copy of the measured model whose running buffers hold the population statistics
    (None when the model has no running-statistics layer: there is nothing to recalibrate).
    """

    layers: list[dict[str, Any]]
    aggregate: dict[str, Any]
    model: nn.Module | None
    samples: int


def calibrate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]]) -> Calibration:
    """Measures `model`'s running statistics against population statistics from `batches`.

    Works on a deep copy; `model` (its buffers and mode) is left untouched. The copy, with its running
    buffers set to the population statistics (precise BN), is returned for evaluation.
    """
    layers = running_stat_layers(model)
    if not layers:
        return Calibration([], aggregate([]), None, 0)
    measured = copy.deepcopy(model)
    measured_layers = running_stat_layers(measured)
    samples = 0

    def counted():
        nonlocal samples
        for x, y in batches:
            samples += int(x.shape[0])
            yield x, y

    pop = population_statistics(measured, counted(), measured_layers)
    rows = []
    for (name, layer), (_, twin) in zip(layers, measured_layers, strict=True):
        stats = pop[name]
        running_var = cast(torch.Tensor, layer.running_var)  # a buffer: nn.Module's typing cannot tell
        row: dict[str, Any] = {"layer": name, "channels": int(running_var.numel())}
        if stats.mean is None or stats.var is None:  # both None together
            row.update(dict.fromkeys(FIGURES))
        else:
            if stats.var.shape != running_var.shape:
                raise ValueError(f"layer '{name}': running_var has shape {tuple(running_var.shape)} "
                                 f"but its input has {stats.var.numel()} channels")
            eps = float(getattr(layer, "eps", DEFAULT_EPS))
            row.update(layer_errors(_running_mean(layer), running_var, stats.mean, stats.var, eps))
            with torch.no_grad():
                twin_mean, twin_var = _running_mean(twin), cast(torch.Tensor, twin.running_var)
                if twin_mean is not None:
                    twin_mean.copy_(stats.mean.to(twin_mean.dtype))
                twin_var.copy_(stats.var.to(twin_var.dtype))
        rows.append(row)
    measured.train(model.training)
    return Calibration(rows, aggregate(rows), measured, samples)
