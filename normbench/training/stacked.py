"""Several seeds of one configuration trained together as one stacked model ("stacked seeds").

DESIGN. K runs that differ only in their seed (initialization and data order) make the same sequence of
operations on tensors of the same shapes. At LeNet's small batches a step costs mostly per-operation overhead
(dispatch, the autograd engine, the optimizer's per-parameter loop) and kernels too small to run efficiently
(oneDNN's convolutions on 1-6 input channels), so the K runs are turned into one model whose every operation
does the K runs' work at once:

- Layout: activations are (N, K*C, ...), seed k's channels at k*C .. (k+1)*C - 1 (seed-major), the layout in
  which a grouped convolution and a per-channel norm see the seeds as independent blocks. Flattening
  (N, K*C, h, w) gives (N, K*C*h*w) with seed k's features in its own block, in the order its own model
  flattens them.
- `nn.Conv2d` -> one convolution with K times the channels and `groups` times K: group k reads only seed k's
  input channels with seed k's kernels (the weight is the seeds' weights concatenated), i.e. seed k's own
  convolution.
- `nn.Linear` -> a batched matrix product (`torch.baddbmm`) of seed k's features with seed k's weight.
- BatchNorm -> BatchNorm over K*C channels: statistics, normalization, affine and the running-statistics
  update are per channel in torch's kernel, so channel k*C + c is seed k's channel c with seed k's buffers;
  momentum, eps and the unbiased running variance are torch's own. `num_batches_tracked` is one counter for
  all seeds, which is exact because every seed makes the same number of steps (it only matters for
  `momentum=None`, the cumulative average).
- GroupNorm (`gn`, and `ln` which is GroupNorm with one group) -> GroupNorm with K times the groups over K*C
  channels: per sample, group k*G + g is seed k's group g (on a contiguous copy: `ContiguousGroupNorm`).
- Activations, average pooling, flatten and identity act elementwise or per channel: used as they are.
- The loss is each seed's mean cross-entropy over its own batch, and the backward pass runs on their sum:
  no parameter is shared between seeds, so d(sum)/d(seed k's parameters) = d(loss_k)/d(seed k's parameters)
  exactly (the sum passes a gradient of exactly 1 to every term).
- The optimizer (SGD with momentum, Nesterov, weight decay; AdamW) is elementwise per parameter entry, with
  the same step count and learning rate for every seed, so one optimizer over the stacked tensors makes each
  seed's update; parameter groups (`optim.norm_weight_decay`) are the same norm sites as the separate runs'.
  Gradient clipping by the global norm is not elementwise (it needs each seed's own norm): `StackedTrainer`
  has none, and gradient accumulation, mixed precision and several devices are not part of it either.

Each seed is built exactly as its separate run builds it (`torch.manual_seed(seed)` then the same model
builder: the same Xavier draws), and each draws its own data order from its own `BatchLoader` seeded with its
seed (`normbench.train` does the same); the loaders of one configuration give batches of equal sizes at every
step, so the seeds' batches stack. What differs from the separate runs is only the kernels' summation order
(a grouped convolution in channels-last, a batched matrix product), so the two computations agree to rounding:
`tests/test_stacked.py` checks it in float64 over 100-300 steps (< 1e-10 relative, parameters and running
statistics), and `benchmarks/stacked_seeds.py` reports the float64 difference on Fashion-MNIST next to a
yardstick, the separate runs' own change when one weight moves by one ulp, with the float32 drift and the
speed. Training may amplify rounding (a LeNet-GN at lr 0.1 with momentum 0.9 does, by ~10^13 in 300 steps):
there the stacked run moves as far from the separate one as the separate run moves under a one-ulp change,
which is as exact as any change of kernel, thread count or machine leaves a run.

Only models whose modules are all of the kinds above (LeNet, `model=lenet`) and the norms `STACKABLE_NORMS`
stack; anything else is refused with one error naming the module and what stacks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normbench.errors import ConfigError
from normbench.models.lenet import LeNet
from normbench.training.module import parameter_groups
from normbench.training.schedule import Schedule

STACKABLE_NORMS: tuple[str, ...] = ("bn", "gn", "ln", "none")
STACKABLE_MODELS: tuple[str, ...] = ("lenet",)
# modules whose computation is elementwise or per channel: the same module serves the stacked layout
_PASS_THROUGH = (nn.Sigmoid, nn.ReLU, nn.Identity, nn.AvgPool2d, nn.Flatten)
# containers whose forward only chains their children (so it is layout-agnostic)
_CONTAINERS = (nn.Sequential, LeNet)


def check_stackable(model: str, norm: str, options: dict[str, Any] | None = None) -> None:
    """Refuses, before any work, a configuration whose seeds cannot be stacked.

    Raises:
        ConfigError: one line naming the model or norm (or norm option) and the accepted values.
    """
    if model not in STACKABLE_MODELS:
        raise ConfigError(f"stacked seeds: model={model} cannot be stacked; accepted: {', '.join(STACKABLE_MODELS)}")
    if norm not in STACKABLE_NORMS:
        raise ConfigError(f"stacked seeds: norm={norm} cannot be stacked; accepted: {', '.join(STACKABLE_NORMS)}")
    if (options or {}).get("accumulation_aware"):
        raise ConfigError("stacked seeds: norm.accumulation_aware=true cannot be stacked; accepted: false")


class StackedLinear(nn.Module):
    """K linear layers as one: input (N, K*in) seed-major, output (N, K*out); weight (K, out, in), bias (K, out)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.num_seeds, self.in_features, self.out_features = len(layers), layers[0].in_features, layers[0].out_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
                     if layers[0].bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k = x.shape[0], self.num_seeds
        xs = x.view(n, k, self.in_features).transpose(0, 1)  # (K, N, in)
        weight = self.weight.transpose(1, 2)
        out = torch.bmm(xs, weight) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), xs, weight)
        return out.transpose(0, 1).reshape(n, k * self.out_features)  # (N, K*out)


def _cat(modules: Sequence[nn.Module], name: str) -> torch.Tensor:
    """The modules' tensors `name` concatenated along dim 0 (seed-major blocks), as a new tensor."""
    return torch.cat([cast(torch.Tensor, getattr(m, name)).detach() for m in modules]).clone()


def _stacked_conv(layers: Sequence[nn.Conv2d]) -> nn.Conv2d:
    first, k = layers[0], len(layers)
    if first.padding_mode != "zeros":
        raise ConfigError(f"stacked seeds: a convolution with padding_mode={first.padding_mode} cannot be stacked; "
                          "accepted: zeros")
    pair = tuple[int, int]  # a Conv2d's sizes are pairs (torch types them as tuples of any length)
    conv = nn.Conv2d(k * first.in_channels, k * first.out_channels, cast(pair, first.kernel_size),
                     stride=cast(pair, first.stride), padding=cast("str | pair", first.padding),
                     dilation=cast(pair, first.dilation), groups=k * first.groups, bias=first.bias is not None,
                     device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(_cat(layers, "weight"))
        if conv.bias is not None:
            conv.bias.copy_(_cat(layers, "bias"))
    return conv


def _stacked_batch_norm(layers: Sequence[_BatchNorm]) -> _BatchNorm:
    first = layers[0]
    stacked = copy.deepcopy(first)  # same class, eps, momentum, affine, track_running_stats
    stacked.num_features = len(layers) * first.num_features
    for name in ("weight", "bias"):
        if getattr(first, name) is not None:
            setattr(stacked, name, nn.Parameter(_cat(layers, name)))
    for name in ("running_mean", "running_var"):
        if getattr(first, name) is not None:
            setattr(stacked, name, _cat(layers, name))
    tracked = {int(cast(torch.Tensor, m.num_batches_tracked)) for m in layers if m.num_batches_tracked is not None}
    if len(tracked) > 1:
        raise ConfigError("stacked seeds: the seeds' BatchNorm layers have tracked different numbers of batches")
    return stacked


class ContiguousGroupNorm(nn.GroupNorm):
    """GroupNorm on a contiguous copy of its input: torch's CPU GroupNorm kernels are several times slower on
    channels-last tensors (1.7 ms against well under 1 ms for LeNet's first norm site stacked 5 times at batch
    32, one thread), more than the copy costs. Same numbers as GroupNorm up to rounding."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input.contiguous())


def _stacked_group_norm(layers: Sequence[nn.GroupNorm]) -> nn.GroupNorm:
    first, k = layers[0], len(layers)
    stacked = ContiguousGroupNorm(k * first.num_groups, k * first.num_channels, eps=first.eps, affine=first.affine)
    if first.affine:
        stacked.weight = nn.Parameter(_cat(layers, "weight"))
        stacked.bias = nn.Parameter(_cat(layers, "bias"))
    return stacked


def _stack_leaf(layers: Sequence[nn.Module], path: str) -> nn.Module:
    first = layers[0]
    kind = type(first)
    if any(type(m) is not kind for m in layers):
        raise ConfigError(f"stacked seeds: the seeds' models differ at {path or 'the root'}")
    if kind is nn.Conv2d:
        return _stacked_conv(layers)  # type: ignore[arg-type]
    if kind is nn.Linear:
        return StackedLinear(layers)  # type: ignore[arg-type]
    if isinstance(first, _BatchNorm) and kind.forward is _BatchNorm.forward:
        return _stacked_batch_norm(layers)  # type: ignore[arg-type]
    if isinstance(first, nn.GroupNorm) and kind.forward is nn.GroupNorm.forward:
        return _stacked_group_norm(layers)  # type: ignore[arg-type]
    if isinstance(first, _PASS_THROUGH) and not (isinstance(first, nn.Flatten) and first.start_dim != 1):
        return copy.deepcopy(first)
    raise ConfigError(f"stacked seeds: module {path} ({kind.__name__}) cannot be stacked; stackable: Conv2d, Linear, "
                      f"BatchNorm, GroupNorm/LayerNorm2d, activations, pooling (norms {', '.join(STACKABLE_NORMS)})")


def _stack_tree(template: nn.Module, models: Sequence[nn.Module], path: str = "") -> nn.Module:
    """`template` (a deep copy of the first model) with every leaf replaced by its stacked twin."""
    children = list(template.named_children())
    if not children:
        return _stack_leaf(models, path)
    if not isinstance(template, _CONTAINERS):
        raise ConfigError(f"stacked seeds: module {path or 'the model'} ({type(template).__name__}) has a forward "
                          "that stacking cannot vouch for; stackable containers: Sequential, LeNet")
    for name, child in children:
        setattr(template, name, _stack_tree(child, [m.get_submodule(name) for m in models],
                                            f"{path}.{name}" if path else name))
    return template


class StackedModel(nn.Module):
    """K models of one architecture (K seeds) as one model (module docstring).

    Args:
        models: the seeds' models, built as their separate runs build them; their current weights and buffers
            are copied (the models themselves are not used afterwards). `unstack()` returns them again.
        channels_last: run the convolution part in the channels-last memory format (the default): oneDNN's
            grouped convolution is 1.5-3x faster there than in the contiguous format at LeNet's sizes (one
            thread; benchmarks/stacked_seeds.py), and the memory format changes no result beyond rounding.

    Raises:
        ConfigError: a module that cannot be stacked, or models of different architectures.
    """

    def __init__(self, models: Sequence[nn.Module], channels_last: bool = True) -> None:
        super().__init__()
        if not models:
            raise ValueError("stacked seeds: no models given")
        self.num_seeds = len(models)
        self._template = [copy.deepcopy(models[0])]  # in a list: not a submodule (no parameters of its own)
        self.net = _stack_tree(copy.deepcopy(models[0]), models)
        self.norm_sites = [f"net.{s}" for s in getattr(models[0], "norm_sites", [])]
        # which stacked tensor holds each of a seed's state-dict entries, and how to slice it
        self._sources = {name: self._source(name) for name in models[0].state_dict()}
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.net.to(memory_format=torch.channels_last)  # the 4-D tensors: convolution kernels
        self.train(models[0].training)

    def _source(self, name: str) -> tuple[str, str]:
        owner, _, leaf = name.rpartition(".")
        module = self.net.get_submodule(owner)
        if isinstance(module, StackedLinear):
            return f"net.{name}", "index"  # (K, ...) tensors
        if leaf == "num_batches_tracked":
            return f"net.{name}", "shared"
        return f"net.{name}", "block"  # K blocks along dim 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, classes) of stacked input `x` (N, K*C, H, W) (`stack_batches`, `repeat_input`)."""
        out = self.net(x.contiguous(memory_format=self.memory_format))
        return out.view(out.shape[0], self.num_seeds, -1)

    def repeat_input(self, x: torch.Tensor) -> torch.Tensor:
        """One batch `x` (N, C, ...) given to every seed (evaluation on a common split)."""
        return x.repeat(1, self.num_seeds, *([1] * (x.dim() - 2)))

    def seed_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Seed `k`'s state dict, with the keys and shapes of its own model (tensors copied)."""
        if not 0 <= k < self.num_seeds:
            raise IndexError(f"seed index {k} out of range for {self.num_seeds} stacked seeds")
        state = self.state_dict()
        out = {}
        for name, (source, how) in self._sources.items():
            tensor = state[source]
            if how == "index":
                out[name] = tensor[k].clone()
            elif how == "shared":
                out[name] = tensor.clone()
            else:
                size = tensor.shape[0] // self.num_seeds
                out[name] = tensor[k * size:(k + 1) * size].clone(memory_format=torch.contiguous_format)
        return out

    def unstack(self) -> list[nn.Module]:
        """The K seeds as separate models of the original architecture, with their current state."""
        models = []
        device = next(iter(self.state_dict().values())).device  # the template stays where it was built
        for k in range(self.num_seeds):
            model = copy.deepcopy(self._template[0]).to(device)
            model.load_state_dict(self.seed_state_dict(k))
            model.train(self.training)
            models.append(model)
        return models


def build_stacked(build: Callable[[], nn.Module], seeds: Sequence[int], channels_last: bool = True) -> StackedModel:
    """The stacked model of `seeds`: each seed's model from `build()` right after `torch.manual_seed(seed)`,
    as a separate run seeds torch (`lightning.seed_everything`) before it builds its model."""
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build())
    return StackedModel(models, channels_last=channels_last)


def stack_batches(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The seeds' batches (each (N, C, H, W), equal N) as one stacked input (N, K*C, H, W)."""
    x = torch.stack(list(xs), dim=1)  # (N, K, C, ...)
    return x.reshape(x.shape[0], -1, *x.shape[3:])


def seed_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each seed's mean cross-entropy (K,) from stacked logits (N, K, classes) and labels (N, K)."""
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0)


def make_optimizer(model: StackedModel, optim: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer each seed's run makes (`Classifier.configure_optimizers`), over the stacked tensors.

    Raises:
        ConfigError: an optimizer name other than sgd or adamw.
    """
    return _optimizer(parameter_groups(model, optim["weight_decay"], optim.get("norm_weight_decay")), optim)


def _optimizer(params: list[dict[str, Any]], optim: dict[str, Any]) -> torch.optim.Optimizer:
    if optim["name"] == "sgd":
        return torch.optim.SGD(params, lr=optim["lr"], momentum=optim["momentum"],
                               weight_decay=optim["weight_decay"], nesterov=optim["nesterov"])
    if optim["name"] == "adamw":
        return torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    raise ConfigError(f"stacked seeds: optim.name={optim['name']} cannot be stacked; accepted: sgd, adamw")


class StackedTrainer:
    """Trains a `StackedModel`: one optimizer step per stacked batch, each seed's batch from its own loader.

    Args:
        model: the stacked seeds.
        optim: normbench's optim config section (name, lr, momentum, weight_decay, norm_weight_decay, nesterov,
            scheduler, warmup_steps).
        total_steps: the run's optimizer steps (needed by a decaying schedule; `normbench.training.schedule`).
    """

    def __init__(self, model: StackedModel, optim: dict[str, Any], total_steps: int | None = None) -> None:
        self.model = model
        self.optimizer = make_optimizer(model, optim)
        self.base_lr = float(optim["lr"])
        name, warmup = optim.get("scheduler", "none"), int(optim.get("warmup_steps", 0))
        self.schedule = Schedule(name, warmup, total_steps if name != "none" else None)
        self.steps = 0

    def step(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> torch.Tensor:
        """One optimizer step of every seed on its own batch; returns the seeds' losses (K,), detached."""
        if self.schedule.varies:
            lr = self.schedule.lr(self.base_lr, self.steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.model.train()
        losses = seed_losses(self.model(stack_batches(xs)), torch.stack(list(ys), dim=1))
        losses.sum().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return losses.detach()

    def fit(self, loaders: Sequence[Any], max_steps: int | None = None, max_epochs: int = 1) -> int:
        """Trains `max_epochs` epochs (at most `max_steps` steps) of the seeds' loaders in lockstep.

        Args:
            loaders: one `BatchLoader` per seed (`InMemoryData.loader(..., seed=seed)`), in seed order.

        Returns:
            The optimizer steps made.
        """
        if len(loaders) != self.model.num_seeds:
            raise ValueError(f"stacked seeds: {len(loaders)} loaders for {self.model.num_seeds} seeds")
        for _ in range(max_epochs):
            for batches in zip(*loaders, strict=True):
                if max_steps is not None and self.steps >= max_steps:
                    return self.steps
                self.step([b[0] for b in batches], [b[1] for b in batches])
        return self.steps


def separate_run(build: Callable[[], nn.Module], loader: Any, seed: int, steps: int,
                 optim: dict[str, Any]) -> nn.Module:
    """One seed trained alone, as a plain loop: the reference the stacked run is compared with.

    The same computation as `normbench.train` for that seed on one device in full precision without
    accumulation or clipping (`tests/test_stacked.py` checks it bit for bit): `torch.manual_seed(seed)` then
    `build()`, the optimizer and parameter groups of `Classifier.configure_optimizers`, the learning-rate
    schedule stepped after each optimizer step, and `loader` (the seed's own `BatchLoader`) for the batches,
    epoch after epoch, until `steps` optimizer steps.
    """
    torch.manual_seed(seed)
    net = build()
    opt = _optimizer(parameter_groups(net, optim["weight_decay"], optim.get("norm_weight_decay")), optim)
    name, warmup = optim.get("scheduler", "none"), int(optim.get("warmup_steps", 0))
    schedule = Schedule(name, warmup, steps if name != "none" else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule.factor) if schedule.varies else None
    net.train()
    done = 0
    while done < steps:
        for x, y in loader:
            if done == steps:
                break
            F.cross_entropy(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            done += 1
    return net


@torch.no_grad()
def seed_accuracies(model: StackedModel, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> list[float]:
    """Each seed's accuracy on one common split (`x`, `y`), in evaluation mode (running statistics)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros(model.num_seeds, dtype=torch.long, device=y.device)
    for start in range(0, len(x), batch_size):
        logits = model(model.repeat_input(x[start:start + batch_size]))
        correct += (logits.argmax(-1) == y[start:start + batch_size, None]).sum(0)
    model.train(was_training)
    return (correct.double() / len(x)).tolist()
