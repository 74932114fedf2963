"""Loss and accuracy over a whole split, in a chosen train/eval mode."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             train_mode: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` over `batches`; restores the model's mode.

    With `train_mode=False` norms use their running statistics (eval mode). With `train_mode=True`
    they use the statistics of each batch, as during training; the caller must then run on a copy or
    accept running-statistics updates.
    """
    was_training = model.training
    model.train(train_mode)
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.long)
    count = 0
    try:
        for x, y in batches:
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
            correct += (logits.argmax(dim=1) == y).sum().cpu()
            count += y.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got no batches")
    return float(loss_sum) / count, int(correct) / count
