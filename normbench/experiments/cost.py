"""What one run of a planned configuration costs on this machine, measured before anything runs.

`reproduce STUDY --plan` takes a configuration's cost from committed records of the same training config when
there are some (their wall time, on the machine that made them). For a configuration no record matches, it
measures here, in a few seconds per configuration:

- the training step: the configuration's model, norm, per-worker norms, precision, memory format and thread
  count, built as `normbench.train` builds them, timed over a few SGD steps at its step batch size on real
  inputs of its dataset (the fastest of at least 5 after 2 untimed ones, more up to 0.3 s; torch.compile is
  not run here, so a compiled configuration is costed at its eager speed: an overestimate);
- the evaluation: eval-mode forward passes at its eval batch size, per example;

and adds them up over the run: epochs x steps per epoch x the step (micro-batches included), plus every
epoch's evaluation of the training, validation and test sets. The per-epoch measurements (calibration, test
modes, precise statistics) and Lightning's own cost are not modelled one by one; instead, when the plan also
holds configurations with committed records of the same model and dataset, the estimate is scaled by the
median ratio of their committed wall time to this model's estimate for them ("calibrated by k committed
configurations"), which carries both those costs and the speed of this machine relative to the recording one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

STEPS_TIMED = 5
STEPS_WARMUP = 2
MIN_TIMED_S = 0.3  # keep timing (up to MAX_STEPS) until the timed steps add up to this
MAX_STEPS = 30


@dataclass(frozen=True)
class StepCosts:
    """Measured seconds of one training step (micro-batch) and of evaluating one example."""

    step_s: float
    eval_s_per_example: float


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class CostModel:
    """Measures and caches step costs per distinct (model, norm, batch, precision, threads) configuration."""

    def __init__(self) -> None:
        self._data: dict[tuple, Any] = {}
        self._steps: dict[tuple, StepCosts] = {}

    def _load(self, cfg: DictConfig) -> Any:
        from normbench.train import load_run_data

        d = cfg.data
        key = tuple(sorted((k, str(v)) for k, v in d.items()))  # every data option
        if key not in self._data:
            self._data[key] = load_run_data(cfg)
        return self._data[key]

    def step_costs(self, cfg: DictConfig) -> StepCosts:
        """The measured step and per-example evaluation seconds of `cfg` (cached by what decides them)."""
        from normbench.run_facts import step_batch_size
        from normbench.train import apply_fast_path, build_run_model
        from normbench.training.fast_path import prepare

        cfg, _ = apply_fast_path(cfg, "cpu")  # trainer.fast_path=fastest|auto: the settings the run would take
        t = cfg.trainer
        key = (str(dict(cfg.model)), str(dict(cfg.norm)), str(cfg.data.name), step_batch_size(cfg),
               int(cfg.data.eval_batch_size), t.emulate_devices, t.precision, t.channels_last, t.threads)
        if key in self._steps:
            return self._steps[key]
        data = self._load(cfg)
        with _threads(int(t.threads or torch.get_num_threads())):
            torch.manual_seed(0)
            net = prepare(build_run_model(cfg, data), t.precision, t.channels_last)
            opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
            bs = min(step_batch_size(cfg), len(data.train_x))
            x, y = data.train_x[:bs], data.train_y[:bs]
            if t.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if t.precision == "bf16-mixed" else nullcontext()
            times = []
            net.train()
            i = 0
            while i < STEPS_WARMUP + STEPS_TIMED or (sum(times) < MIN_TIMED_S and i < STEPS_WARMUP + MAX_STEPS):
                i += 1
                t0 = time.perf_counter()
                with autocast:
                    loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i > STEPS_WARMUP:
                    times.append(time.perf_counter() - t0)
            ebs = min(int(cfg.data.eval_batch_size), len(data.test_x))
            net.eval()
            evals = []
            with torch.no_grad():
                for i in range(4):
                    t0 = time.perf_counter()
                    net(data.test_x[:ebs])
                    if i:
                        evals.append((time.perf_counter() - t0) / ebs)
        # the fastest repeat: the cost without another process's interference (a shared machine only adds to it)
        self._steps[key] = StepCosts(min(times), min(evals))
        return self._steps[key]

    def run_seconds(self, cfg: DictConfig) -> float:
        """Estimated seconds of one run of `cfg` (training steps and per-epoch evaluation, uncalibrated)."""
        from normbench.run_facts import step_batch_size

        data = self._load(cfg)
        costs = self.step_costs(cfg)
        bs = step_batch_size(cfg)
        n_train = len(data.train_x)
        steps = n_train // bs if cfg.data.drop_last else -(-n_train // bs)
        if cfg.trainer.limit_train_batches is not None:
            limit = cfg.trainer.limit_train_batches
            steps = min(steps, int(limit) if isinstance(limit, int) else max(1, int(steps * float(limit))))
        epochs = int(cfg.trainer.max_epochs)
        total_steps = epochs * steps
        if cfg.trainer.max_steps:  # optimizer steps; each takes accumulate_grad_batches micro-batches
            total_steps = min(total_steps, int(cfg.trainer.max_steps) * int(cfg.trainer.accumulate_grad_batches))
        n_val = len(data.val_x) if getattr(data, "val_x", None) is not None else 0
        eval_examples = epochs * (n_train + len(data.test_x) + n_val)
        return total_steps * costs.step_s + eval_examples * costs.eval_s_per_example


def cpu_hours(seconds: float, cfg: DictConfig) -> float:
    return seconds * int(cfg.trainer.threads or torch.get_num_threads()) / 3600
