"""Loss, accuracy and the expected calibration error of the predictions over a whole split."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Evaluation:
    """Mean cross-entropy, accuracy and (when asked for) the ECE of the predictions over a split."""

    loss: float
    acc: float
    ece: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], train_mode: bool = False,
             ece_bins: int | None = None,
             forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> Evaluation:
    """Loss and accuracy of `model` over `batches` (and the ECE with `ece_bins` bins); restores the model's mode.

    With `train_mode=False` norms use their running statistics (eval mode). With `train_mode=True`
    they use the statistics of each batch, as during training; the caller must then run on a copy or
    accept running-statistics updates. `forward(model, x)` replaces `model(x)` (e.g. one example at a time).

    The ECE (torchmetrics, L1, equal-width confidence bins) is the calibration of the *predictions*
    (confidence vs. accuracy), unrelated to the running-statistics calibration of
    `normbench.metrics.running_stats`.

    Raises:
        ValueError: no batch arrived.
    """
    ece = None
    was_training = model.training
    model.train(train_mode)
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.long)
    count = 0
    try:
        for x, y in batches:
            logits = (model(x) if forward is None else forward(model, x)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
            correct += (logits.argmax(dim=1) == y).sum().cpu()
            count += y.numel()
            if ece_bins is not None:
                if ece is None:
                    from torchmetrics.classification import MulticlassCalibrationError

                    ece = MulticlassCalibrationError(num_classes=logits.shape[1], n_bins=ece_bins, norm="l1")
                ece.update(logits.softmax(1).cpu(), y.cpu())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got no batches")
    return Evaluation(float(loss_sum) / count, int(correct) / count, None if ece is None else float(ece.compute()))
