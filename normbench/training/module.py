"""The LightningModule: cross-entropy classification around a normbench model."""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn
from torch.optim.lr_scheduler import LRScheduler


class Classifier(L.LightningModule):
    """Trains `net` with the optimizer described by `optim` (normbench's optim config section).

    Training loss and accuracy are accumulated on the device during the epoch (no per-step host sync)
    and exposed as `epoch_train_loss` / `epoch_train_acc` at epoch end: these are the batch-statistics
    figures the optimizer saw, averaged over the epoch while the weights moved.

    The optimization step is written out (Lightning's manual optimization) instead of Lightning's automatic
    loop, whose per-step closure and hook dispatch cost about as much as a LeNet step at batch 2
    (benchmarks/throughput.py). The arithmetic is the automatic loop's, in the same order, so the numbers are
    identical: each micro-batch's loss is divided by `accumulate_grad_batches`, the optimizer steps after
    every `accumulate_grad_batches` micro-batches and after the epoch's last one (a shorter final window, as
    Lightning does), gradients are clipped by norm to `gradient_clip_val` in `on_before_optimizer_step` (after
    mixed precision unscaled them), and an epoch-interval
    learning-rate scheduler steps at the end of each epoch. `LightningOptimizer.step` keeps the optimizer-step
    count (`trainer.global_step`, `max_steps`) and the `on_before_optimizer_step` hooks.
    """

    _train_forward: nn.Module  # set in __init__ through __dict__ (below)

    def __init__(self, net: nn.Module, optim: dict[str, Any], max_epochs: int, hparams: dict[str, Any] | None = None,
                 accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None,
                 compile_mode: str | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        self.optim_cfg = dict(optim)
        self.max_epochs = max_epochs
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.gradient_clip_val = gradient_clip_val or None
        self._plain_backward = False  # decided when fitting starts (plain_backward)
        # The training forward through torch.compile (None: eager). Kept out of the module's children so the
        # state dict has no second copy of the weights; evaluation passes call `self.net` eagerly.
        self.__dict__["_train_forward"] = compiled_forward(net, compile_mode) if compile_mode else net
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
        logits = self._train_forward(x)
        loss = F.cross_entropy(logits, y)
        if self.initial_loss is None:
            self.initial_loss = float(loss.detach())  # one host sync, at the first step only
        assert self._sums is not None  # set by on_train_epoch_start
        with torch.no_grad():
            n = y.numel()
            self._sums += torch.stack([loss.detach().double() * n, (logits.argmax(1) == y).sum().double()])
        self._count += n
        self._optimize(loss, batch_idx)
        return loss

    def _optimize(self, loss: torch.Tensor, batch_idx: int) -> None:
        k = self.accumulate_grad_batches
        opt = cast(LightningOptimizer, self.optimizers())  # configure_optimizers returns one optimizer
        if self._plain_backward:
            (loss / k if k > 1 else loss).backward()
        else:
            self.manual_backward(loss / k if k > 1 else loss)
        if (batch_idx + 1) % k and batch_idx + 1 != self.trainer.num_training_batches:
            return  # inside an accumulation window
        opt.step()  # clips in on_before_optimizer_step
        opt.zero_grad(set_to_none=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Here, not before opt.step(): mixed precision unscales the gradients inside step, just before this
        # hook, so the clipping sees true gradients (as in Lightning's automatic loop, which clips at this point,
        # after the callbacks' hooks).
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    def on_fit_start(self) -> None:
        self._plain_backward = plain_backward(self.trainer, self)

    def on_train_epoch_end(self) -> None:
        scheduler = cast("LRScheduler | None", self.lr_schedulers())  # at most one, epoch interval
        if scheduler is not None:
            scheduler.step()

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


_BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")


def plain_backward(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether `loss.backward()` does all that Lightning's `manual_backward` would: one device, full precision (no
    loss scaling), and no callback or module hook around the backward pass. Lightning's dispatch of those two
    hooks to every callback costs about 50 us a step, a twentieth of a LeNet step at batch 2."""
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy

    if not isinstance(trainer.strategy, SingleDeviceStrategy) or type(trainer.precision_plugin) is not Precision:
        return False
    # Trainer.callbacks is set by Lightning's callback connector, not declared on the class
    hooked = [module, *trainer.callbacks]  # type: ignore[attr-defined]
    return not any(_overrides(obj, h) for obj in hooked for h in _BACKWARD_HOOKS)


def _overrides(obj: object, hook: str) -> bool:
    """`obj`'s class (or a base below Lightning's) defines `hook` itself."""
    for cls in type(obj).__mro__:
        if cls.__module__.startswith(("lightning.", "pytorch_lightning.")):
            return False
        if hook in cls.__dict__:
            return True
    return False


def compiled_forward(net: nn.Module, mode: str) -> nn.Module:
    """`net` through torch.compile (`mode`: default, reduce-overhead, max-autotune), one static graph per input
    shape (a trailing partial batch compiles its own instead of making every step's graph dynamic). Torch
    reuses the compiled code for another instance of the same model in the same process, so a sweep worker
    compiles once per model and shape, not once per trial."""
    # torch.compile's stub returns a plain callable; given a module it returns one (an OptimizedModule).
    return cast(nn.Module, torch.compile(net, mode=None if mode == "default" else mode, dynamic=False))


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
