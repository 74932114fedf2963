"""Tells accumulation-aware norms where optimizer steps begin and end.

A layer opts in by having a `commit_running_stats()` method and a `defer_running_stats` flag
(`normbench.norms.accumulation.AccumulationAwareBatchNorm`). While training, the flag is on and the
pooled micro-batch statistics are committed in `on_before_optimizer_step`, which Lightning calls after
the closure of a step's last micro-batch (forward and backward) and before `optimizer.step()`; with
`accumulate_grad_batches=k` that is every k-th batch and the last batch of an epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn


def accumulation_aware_layers(model: nn.Module) -> list[Any]:  # modules, duck-typed (module docstring)
    return [m for m in model.modules() if callable(getattr(m, "commit_running_stats", None))]


class AccumulationBoundary(L.Callback):
    """Commits the pooled running statistics of accumulation-aware layers once per optimizer step."""

    def __init__(self) -> None:
        self._layers: list[Any] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._layers = accumulation_aware_layers(pl_module)
        for m in self._layers:
            m.defer_running_stats = True

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        for m in self._layers:
            m.commit_running_stats()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning steps on an epoch's last batch, so nothing is pending here; commit anyway so that
        # the epoch-end evaluation can never see statistics that miss a window.
        for m in self._layers:
            m.commit_running_stats()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for m in self._layers:
            m.defer_running_stats = False


def accumulation_callbacks(model: nn.Module) -> list[L.Callback]:
    """[AccumulationBoundary()] when `model` has accumulation-aware layers, else []."""
    return [AccumulationBoundary()] if accumulation_aware_layers(model) else []
