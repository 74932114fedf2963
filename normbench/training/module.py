"""The LightningModule: cross-entropy classification around a normbench model."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class Classifier(L.LightningModule):
    """Trains `net` with the optimizer described by `optim` (normbench's optim config section).

    Training loss and accuracy are accumulated on the device during the epoch (no per-step host sync)
    and exposed as `epoch_train_loss` / `epoch_train_acc` at epoch end: these are the batch-statistics
    figures the optimizer saw, averaged over the epoch while the weights moved.
    """

    def __init__(self, net: nn.Module, optim: dict[str, Any], max_epochs: int, hparams: dict[str, Any] | None = None):
        super().__init__()
        self.net = net
        self.optim_cfg = dict(optim)
        self.max_epochs = max_epochs
        if hparams is not None:
            self.save_hyperparameters(hparams)
        self._sums: torch.Tensor | None = None  # loss sum, correct predictions (on the device)
        self._count = 0
        self.initial_loss: float | None = None  # the first batch's loss, before any update (divergence rule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        self._sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        self._count = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        if self.initial_loss is None:
            self.initial_loss = float(loss.detach())  # one host sync, at the first step only
        with torch.no_grad():
            n = y.numel()
            self._sums += torch.stack([loss.detach().double() * n, (logits.argmax(1) == y).sum().double()])
        self._count += n
        return loss

    def epoch_train_stats(self) -> tuple[float, float]:
        """(mean training loss, training accuracy) of the current epoch, batch statistics."""
        if self._sums is None or self._count == 0:
            return float("nan"), float("nan")
        loss_sum, correct = self._sums.tolist()
        count = self._count
        return loss_sum / count, correct / count

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["normbench_initial_loss"] = self.initial_loss  # the divergence rule's reference

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.initial_loss = checkpoint.get("normbench_initial_loss")

    def configure_optimizers(self):
        cfg = self.optim_cfg
        params = parameter_groups(self.net, cfg["weight_decay"], cfg.get("norm_weight_decay"))
        if cfg["name"] == "sgd":
            opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                                  weight_decay=cfg["weight_decay"], nesterov=cfg["nesterov"])
        elif cfg["name"] == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        else:  # pragma: no cover - the config schema only admits the names above
            raise ValueError(f"unknown optimizer '{cfg['name']}'; accepted: sgd, adamw")
        if cfg.get("scheduler", "none") == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_epochs)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt


def norm_decay(weight_decay: float, norm_weight_decay: float | None) -> float:
    """The weight decay the norm layers' parameters get (`norm_weight_decay`; null: `weight_decay`)."""
    return weight_decay if norm_weight_decay is None else norm_weight_decay


def parameter_groups(net: nn.Module, weight_decay: float, norm_weight_decay: float | None) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the norm layers' parameters with their own weight decay.

    As torchvision's `split_normalization_params`, but the norm layers are the model's norm sites (whatever
    the factory built there, e.g. FRN's threshold or a per-device wrapper's norm), listed in `net.norm_sites`
    by `normbench.models.build_model` (a model without it has no norm group). One group when both decays
    are equal.
    """
    decay = norm_decay(weight_decay, norm_weight_decay)
    params = list(net.parameters())
    sites = getattr(net, "norm_sites", None) or []
    norm_ids = {id(p) for site in sites for p in net.get_submodule(site).parameters()}
    if decay == weight_decay or not norm_ids:
        return [{"params": params}]
    return [{"params": [p for p in params if id(p) not in norm_ids]},
            {"params": [p for p in params if id(p) in norm_ids], "weight_decay": decay}]
