"""The LightningModule: cross-entropy classification around a normbench model."""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from normbench.training.chunks import batches_of
from normbench.training.schedule import DECAYING, Schedule, run_steps


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
    mixed precision unscaled them), and the learning-rate schedule (`normbench.training.schedule`: warm-up,
    cosine or linear decay) steps after every optimizer step. The optimizer-step count (`trainer.global_step`,
    `max_steps`) and the `on_before_optimizer_step` hooks are Lightning's (`LightningOptimizer.step`, or
    `DirectStep` where that is the same step without the dispatch).

    A Lightning batch may be a chunk of several consecutive batches (`normbench.training.chunks`): each gets
    its own step, as if Lightning had handed them one by one, and Lightning's per-batch cost is paid once.
    """

    _train_forward: nn.Module  # set in __init__ through __dict__ (below)

    def __init__(self, net: nn.Module, optim: dict[str, Any], hparams: dict[str, Any] | None = None,
                 accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None,
                 compile_mode: str | None = None, channels_last: bool = False):
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        self.optim_cfg = dict(optim)
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.gradient_clip_val = gradient_clip_val or None
        self.channels_last = bool(channels_last)  # training batches in channels-last (the model was converted)
        self._plain_backward = False  # decided when fitting starts (plain_backward)
        self._direct: DirectStep | None = None  # decided when fitting starts (DirectStep.setup)
        # The training forward through torch.compile (None: eager). Kept out of the module's children so the
        # state dict has no second copy of the weights; evaluation passes call `self.net` eagerly.
        self.__dict__["_train_forward"] = compiled_forward(net, compile_mode) if compile_mode else net
        if hparams is not None:
            self.save_hyperparameters(hparams)
        self._sums: torch.Tensor | None = None  # loss sum, correct predictions (on the device)
        self._count = 0
        self.initial_loss: float | None = None  # the first batch's loss, before any update (divergence rule)
        self._micro = 0  # the epoch's training batches so far (micro-batches under accumulation)
        self._micro_total = 0  # and per epoch
        self.last_batch_examples = 0  # training examples of the last Lightning batch (a chunk: all its batches)
        # The learning-rate schedule, made with the optimizer (configure_optimizers); torch's LambdaLR only where
        # the rate varies: a constant rate runs with no scheduler at all, as before schedules existed.
        self.schedule = Schedule()
        self._scheduler: LambdaLR | None = None
        self.first_step_lr: float | None = None  # the rate of the run's first optimizer step (kept by checkpoints)
        self.last_step_lr: float | None = None  # the rate of the last optimizer step taken (None before any)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        self._sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        self._count = 0
        self._micro = 0
        loader = self.trainer.train_dataloader
        self._micro_total = int(getattr(loader, "micro_batches", self.trainer.num_training_batches))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        """One optimizer step (or accumulation micro-step) per (x, y) batch of `batch`: a chunk of consecutive
        batches (`normbench.training.chunks.StepChunks`) or one batch. Returns the last step's loss (None when
        max_steps was reached before the chunk's first batch)."""
        max_steps = self.trainer.max_steps
        assert self._sums is not None  # set by on_train_epoch_start
        losses: list[torch.Tensor] = []
        logits_all: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        sizes: list[int] = []
        loss: torch.Tensor | None = None
        for x, y in batches_of(batch):
            if 0 <= max_steps <= self.trainer.global_step:
                break  # max_steps reached inside a chunk (Lightning stops after this batch)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = self._train_forward(x)
            loss = F.cross_entropy(logits, y)
            if self.initial_loss is None:
                self.initial_loss = float(loss.detach())  # one host sync, at the first step only
            losses.append(loss.detach())
            logits_all.append(logits.detach())
            labels.append(y)
            sizes.append(y.numel())
            self._optimize(loss)
        self.last_batch_examples = sum(sizes)
        if sizes:  # the chunk's training loss and accuracy, summed on the device in one pass (no host sync)
            with torch.no_grad():
                weights = torch.tensor(sizes, dtype=torch.float64, device=self._sums.device)
                predicted = torch.cat(logits_all).argmax(1)
                correct = (predicted == torch.cat(labels)).sum().double()
                self._sums += torch.stack([(torch.stack(losses).double() * weights).sum(), correct])
            self._count += self.last_batch_examples
        return loss

    def _optimize(self, loss: torch.Tensor) -> None:
        k = self.accumulate_grad_batches
        if self._plain_backward:
            (loss / k if k > 1 else loss).backward()
        else:
            self.manual_backward(loss / k if k > 1 else loss)
        self._micro += 1
        if self._micro % k and self._micro != self._micro_total:
            return  # inside an accumulation window
        if self._direct is not None:
            self._direct.step(self)
        else:
            opt = cast(LightningOptimizer, self.optimizers())  # configure_optimizers returns one optimizer
            opt.step()  # clips in on_before_optimizer_step
            opt.zero_grad(set_to_none=True)
        scheduler = self._scheduler
        if scheduler is None:
            self.last_step_lr = self.optim_cfg["lr"]
        else:  # once per optimizer step, whichever path stepped (chunks and accumulation included)
            self.last_step_lr = float(scheduler.get_last_lr()[0])  # the rate the step just used
            scheduler.step()
        if self.first_step_lr is None:
            self.first_step_lr = self.last_step_lr

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Here, not before opt.step(): mixed precision unscales the gradients inside step, just before this
        # hook, so the clipping sees true gradients (as in Lightning's automatic loop, which clips at this point,
        # after the callbacks' hooks).
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    def on_fit_start(self) -> None:
        self._plain_backward = plain_backward(self.trainer, self)
        self._direct = DirectStep.setup(self.trainer, self)

    def epoch_train_stats(self) -> tuple[float, float]:
        """(mean training loss, training accuracy) of the current epoch, batch statistics."""
        if self._sums is None or self._count == 0:
            return float("nan"), float("nan")
        loss_sum, correct = self._sums.tolist()
        count = self._count
        return loss_sum / count, correct / count

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["normbench_initial_loss"] = self.initial_loss  # the divergence rule's reference
        checkpoint["normbench_first_step_lr"] = self.first_step_lr  # the record's lr_initial

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.initial_loss = checkpoint.get("normbench_initial_loss")
        self.first_step_lr = checkpoint.get("normbench_first_step_lr")

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
        name, warmup = cfg.get("scheduler", "none"), int(cfg.get("warmup_steps", 0))
        self._scheduler = None
        if name == "none" and warmup == 0:
            self.schedule = Schedule()
            return opt
        self.schedule = schedule = Schedule(name, warmup, self.planned_steps() if name in DECAYING else None)
        # a plain function, so that torch's LambdaLR keeps no state of it in the checkpoint (the schedule is a
        # closed form of the step count, which the checkpoint holds)
        self._scheduler = LambdaLR(opt, lambda step: schedule.factor(step))
        # "step" interval: Lightning's automatic loop (tests/test_manual_step.py) steps it after each optimizer
        # step as `_optimize` does; either way Lightning checkpoints its state with the optimizer's.
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self._scheduler, "interval": "step"}}

    def schedule_fields(self) -> dict[str, Any]:
        """The run record's fields of the learning-rate schedule (declared in normbench.record)."""
        return {"lr_schedule": self.schedule.name, "warmup_steps": self.schedule.warmup_steps,
                "schedule_steps": self.schedule.total_steps, "lr_initial": self.first_step_lr,
                "lr_final": self.last_step_lr}

    def planned_steps(self) -> int:
        """The optimizer steps this fit will make (`normbench.training.schedule.run_steps`), from the training
        loader as the fit sees it (a data-parallel rank's share): its batches per epoch (`micro_batches` of a
        chunked loader), accumulation, the trainer's max_epochs and max_steps."""
        trainer = self.trainer
        if trainer.train_dataloader is None:  # as Lightning's estimated_stepping_batches, before the fit loop does
            trainer.fit_loop.setup_data()
        loader = trainer.train_dataloader
        batches = int(getattr(loader, "micro_batches", trainer.num_training_batches))
        return run_steps(batches, self.accumulate_grad_batches, trainer.max_epochs, trainer.max_steps)


_BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")


def single_device_full_precision(trainer: L.Trainer) -> bool:
    """One device, and Lightning's plain precision plugin (no autocast, no loss scaling)."""
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy

    return isinstance(trainer.strategy, SingleDeviceStrategy) and type(trainer.precision_plugin) is Precision


def plain_backward(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether `loss.backward()` does all that Lightning's `manual_backward` would: one device, full precision (no
    loss scaling), and no callback or module hook around the backward pass. Lightning's dispatch of those two
    hooks to every callback costs 40-50 us a step, 4-6 % of a LeNet step at batch 2 (benchmarks/step_paths.py)."""
    if not single_device_full_precision(trainer):
        return False
    # Trainer.callbacks is set by Lightning's callback connector, not declared on the class
    hooked = [module, *trainer.callbacks]  # type: ignore[attr-defined]
    return not any(_overrides(obj, h) for obj in hooked for h in _BACKWARD_HOOKS)


class DirectStep:
    """The optimizer step that `LightningOptimizer.step` makes on one device in full precision, without its
    dispatch: the step counter (`trainer.global_step`) counts it, the callbacks that define
    `on_before_optimizer_step` and then the module get that hook (in Lightning's order: clipping and pooled
    statistics happen there), and the optimizer steps. Lightning's dispatch runs the hook of every callback
    under a profiler context, 34-40 us a step, about 4 % of a LeNet step at batch 2 (benchmarks/step_paths.py).
    `tests/test_manual_step.py` checks the numbers against Lightning's automatic loop."""

    def __init__(self, progress: Any, optimizer: torch.optim.Optimizer, hooked: list[Any]) -> None:
        self.progress, self.optimizer, self.hooked = progress, optimizer, hooked

    @classmethod
    def setup(cls, trainer: L.Trainer, module: L.LightningModule) -> DirectStep | None:
        """The direct step for this fit, or None where Lightning's own step does more: several devices, mixed
        precision (loss scaling), a profiler (it times each step), or a Lightning whose manual loop keeps
        its step count elsewhere."""
        from lightning.pytorch.profilers import PassThroughProfiler

        if not single_device_full_precision(trainer):
            return None
        profiler = trainer.profiler  # type: ignore[attr-defined]  # set by Lightning's profiler connector
        if not isinstance(profiler, PassThroughProfiler) or len(trainer.optimizers) != 1:
            return None
        loop = getattr(trainer.fit_loop.epoch_loop, "manual_optimization", None)
        progress = getattr(loop, "optim_step_progress", None)
        if not all(callable(getattr(progress, f, None)) for f in ("increment_ready", "increment_completed")):
            return None  # pragma: no cover - a Lightning version that moved its step counter
        # Trainer.callbacks is set by Lightning's callback connector, not declared on the class
        hooked = [cb for cb in trainer.callbacks if _overrides(cb, "on_before_optimizer_step")]  # type: ignore[attr-defined]
        return cls(progress, trainer.optimizers[0], hooked)

    def step(self, module: L.LightningModule) -> None:
        """One optimizer step, then the gradients cleared (as `_optimize` does after Lightning's step)."""
        trainer, optimizer = module.trainer, self.optimizer
        self.progress.increment_ready()
        for callback in self.hooked:
            callback.on_before_optimizer_step(trainer, module, optimizer)
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
        self.progress.increment_completed()
        optimizer.zero_grad(set_to_none=True)


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
