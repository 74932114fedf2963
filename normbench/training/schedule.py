"""Learning-rate schedules stepped once per optimizer step: a linear warm-up, then a constant, cosine or linear rate.

With base rate `lr` (optim.lr), `w` warm-up steps (optim.warmup_steps) and a run of `T` optimizer steps, step `t`
(0-based) trains at `lr * factor(t)`:

    t < w:    (t + 1) / (w + 1)          linear from lr / (w + 1); it would reach lr at t = w
    t >= w:   d((t - w) / (T - w))       none: d(p) = 1;  cosine: d(p) = (1 + cos(pi p)) / 2;  linear: d(p) = 1 - p

so warm-up and decay compose (the decay spans the steps after the warm-up), and a decaying rate reaches exactly 0
when training ends: `factor(T) = 0`, the rate after the last step (the last step itself, `t = T - 1`, still
trains, at `lr * d(1 - 1/(T - w))`, as in Hugging Face's and timm's per-step schedules). The closed form is
evaluated at every step (not a recurrence such as torch's CosineAnnealingLR), so a resumed run, which restarts the
count at the checkpoint's step, gets the same rates bit for bit.

`T` counts the optimizer steps the training loop makes (`run_steps`): max_epochs x the steps of an epoch, and
trainer.max_steps when that is smaller. An epoch steps once per `accumulate_grad_batches` batches and once more
after a shorter last window, its batches being the training loader's after drop_last, limit_train_batches and
fast_dev_run; chunked steps (`normbench.training.chunks`) change how Lightning sees the batches, not their count.

Plain Python (no torch): `Schedule` is what `Classifier` hands to torch's LambdaLR, and what the tests compare with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from normbench.errors import ConfigError

# optim.scheduler's values (normbench.config.OptimSchema lists them in its Literal)
SCHEDULERS = ("none", "cosine", "linear")
DECAYING = ("cosine", "linear")


def run_steps(batches_per_epoch: int, accumulate_grad_batches: int, max_epochs: int | None,
              max_steps: int | None) -> int:
    """The optimizer steps a run makes: `max_epochs` epochs of `batches_per_epoch` (micro-)batches, one step per
    `accumulate_grad_batches` of them and one after a shorter last window; at most `max_steps` (None or -1: no cap).

    Raises:
        ValueError: without an epoch limit and without a step limit (the run has no planned end).
    """
    cap = None if max_steps is None or max_steps < 0 else int(max_steps)
    if max_epochs is None or max_epochs < 0:
        if cap is None:
            raise ValueError("a decaying learning-rate schedule needs a planned end: max_epochs or max_steps")
        return cap
    per_epoch = -(-int(batches_per_epoch) // max(1, int(accumulate_grad_batches)))
    total = int(max_epochs) * per_epoch
    return total if cap is None else min(total, cap)


@dataclass(frozen=True)
class Schedule:
    """One run's schedule (module docstring).

    Attributes:
        name: none, cosine or linear (optim.scheduler).
        warmup_steps: linear warm-up length in optimizer steps (optim.warmup_steps; 0: none).
        total_steps: the run's optimizer steps `T` (`run_steps`); needed by a decaying schedule only.
    """

    name: str = "none"
    warmup_steps: int = 0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS or self.warmup_steps < 0:  # the config schema checks both for users
            raise ValueError(f"no schedule {self.name!r} with {self.warmup_steps} warm-up steps; accepted: "
                             f"{', '.join(SCHEDULERS)}, warm-up >= 0")
        if self.decays:
            if self.total_steps is None:
                raise ValueError(f"optim.scheduler={self.name} needs the run's total optimizer steps")
            if self.warmup_steps >= self.total_steps:
                raise ConfigError(
                    f"optim.warmup_steps={self.warmup_steps} leaves no steps for optim.scheduler={self.name} to "
                    f"decay over: the run makes {self.total_steps} optimizer steps; accepted: warmup_steps < "
                    f"{self.total_steps}, a longer run, or optim.scheduler=none")

    @property
    def decays(self) -> bool:
        return self.name in DECAYING

    @property
    def varies(self) -> bool:
        """Whether the rate changes during the run (False: the constant base rate, no scheduler at all)."""
        return self.decays or self.warmup_steps > 0

    def factor(self, step: int) -> float:
        """The multiple of the base rate that optimizer step `step` (0-based) trains at."""
        w = self.warmup_steps
        if step < w:
            return (step + 1) / (w + 1)
        if not self.decays:
            return 1.0
        assert self.total_steps is not None  # checked in __post_init__
        p = min(1.0, (step - w) / (self.total_steps - w))
        if self.name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * p))
        return 1.0 - p

    def lr(self, base_lr: float, step: int) -> float:
        """The rate of optimizer step `step`, as torch's LambdaLR computes it (base rate times `factor`)."""
        return base_lr * self.factor(step)
