"""The CPU fast path: bf16 mixed precision, channels-last memory and torch.compile, chosen per norm.

Which of the three speeds a training step up depends on the norm: on the CPUs measured here bf16 convolutions
and channels-last help BatchNorm's ResNet and slow GroupNorm's down (its channels-last kernels are slow), and
torch.compile pays for itself only where elementwise work dominates (FRN, EvoNorm). So the choice is a
measured table, `fast_paths.json` beside this file, written by `python -m benchmarks.fast_path --write`:

    {"machine": {...}, "torch": "...", "models": {MODEL: {NORM: {"precision": "bf16-mixed",
     "channels_last": true, "compile": false, "speedup": {"32": 1.5, "128": 1.6}, "verified": {...}}}}}

A norm the table does not list, or whose best variant was slower than float32 eager at any measured batch
size, stays on float32 eager: the fast path never slows a norm down.

`trainer.fast_path` (normbench.config.TrainerSchema):

- `off` (default): the run uses trainer.precision / channels_last / compile as given.
- `fastest`: the table's variant for the run's model and norm, measured for speed only.
- `auto`: that variant only where a science check showed it does not change the results: the entry's
  `verified` block (from the committed study `fast_path_check`: the paired test-accuracy difference of the
  variant against float32 eager is equivalent to 0 within `margin_pp`) with a margin no wider than
  `trainer.fast_path_margin`; otherwise float32 eager, and the record says why.

Whatever the path, the norms' arithmetic stays float32: under bf16 autocast every norm site gets its input
cast to float32 first (`float32_norms`), so batch statistics, running statistics and the normalization run in
float32 (autocast lowers only convolutions, linear layers and matrix products to bf16; elementwise ops and
torch's batch/group/layer norm kernels follow their float32 input). Evaluation and the calibration
measurements run outside the training step, where Lightning's autocast does not reach: float32. The record's
`precision_parts` says which part ran in which precision.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

FAST_PATHS_FILE = Path(__file__).with_name("fast_paths.json")
EAGER_FP32 = {"precision": "32", "channels_last": False, "compile": False}


@cache
def fast_path_table(path: Path = FAST_PATHS_FILE) -> dict[str, Any]:
    """The measured table (empty when the file is absent)."""
    if not path.is_file():
        return {"models": {}}
    return json.loads(path.read_text())


def resolve_fast_path(mode: str, model: str, norm: str, accelerator: str, margin_pp: float,
                      table: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The compute settings (precision, channels_last, compile) for `mode` and why.

    Returns ({} and "off", ...) for mode off (the config's own settings stand); otherwise the settings to
    apply and a one-line reason for the record's `fast_path` field.
    """
    if mode == "off":
        return {}, "off"
    if accelerator != "cpu":
        return {}, f"{mode}: not applied (the table is measured on CPU; this run is on {accelerator})"
    table = fast_path_table() if table is None else table
    entry = table.get("models", {}).get(model, {}).get(norm)
    if entry is None:
        return dict(EAGER_FP32), f"{mode}: float32 eager ({model}/{norm} not in the measured table)"
    settings = {k: entry[k] for k in EAGER_FP32}
    name = describe(settings)
    if settings == EAGER_FP32:
        return settings, f"{mode}: float32 eager (nothing measured faster for {model}/{norm})"
    if mode == "fastest":
        return settings, f"fastest: {name} (measured speed only, {speedups(entry)})"
    verified = entry.get("verified")
    if not verified:
        return dict(EAGER_FP32), f"auto: float32 eager ({name} for {model}/{norm} has no science check)"
    if not verified.get("held"):
        return dict(EAGER_FP32), (f"auto: float32 eager ({name} for {model}/{norm} was not shown equivalent in "
                                  f"{verified.get('study')})")
    if float(verified["margin_pp"]) > margin_pp:
        return dict(EAGER_FP32), (f"auto: float32 eager ({name} for {model}/{norm} is equivalent within "
                                  f"{verified['margin_pp']} pp, wider than trainer.fast_path_margin={margin_pp})")
    return settings, (f"auto: {name} ({speedups(entry)}; equivalent to float32 eager within "
                      f"{verified['margin_pp']} pp in {verified.get('study')})")


def describe(settings: dict[str, Any]) -> str:
    """`bf16-mixed + channels-last + compile`, or `float32 eager`."""
    parts = ["bf16-mixed" if settings.get("precision") == "bf16-mixed" else "float32"]
    if settings.get("channels_last"):
        parts.append("channels-last")
    parts.append("compile" if settings.get("compile") else "eager")
    return " + ".join(parts)


def speedups(entry: dict[str, Any]) -> str:
    got = entry.get("speedup") or {}
    return ", ".join(f"{float(v):.2f}x at batch {b}" for b, v in got.items()) or "speed not measured"


def _to_float32(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Forward pre-hook: the norm's input in float32 (a bf16 activation from an autocast convolution)."""
    if args and isinstance(args[0], torch.Tensor) and args[0].dtype in (torch.bfloat16, torch.float16):
        return (args[0].float(), *args[1:])
    return None


def float32_norms(net: nn.Module, sites: list[str]) -> int:
    """Casts the input of every norm site of `net` to float32 (forward pre-hooks; the state dict is unchanged).
    Returns the number of sites hooked."""
    modules = dict(net.named_modules())
    hooked = 0
    for site in sites:
        module = modules.get(site)
        if module is not None:
            module.register_forward_pre_hook(_to_float32)
            hooked += 1
    return hooked


def prepare(net: nn.Module, precision: str, channels_last: bool) -> nn.Module:
    """`net` as a run with these settings trains it: channels-last weights, and float32 norm inputs under
    mixed precision (a float32 run gets no hooks). Used by `normbench.train`, the plan's cost model and the
    benchmark, so all three time the same model."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if precision != "32":
        float32_norms(net, list(getattr(net, "norm_sites", [])))
    return net


def precision_parts(precision: str) -> dict[str, str]:
    """Which part of a run computes in which precision (the record's `precision_parts`)."""
    low = {"bf16-mixed": "bfloat16", "16-mixed": "float16"}.get(precision, "float32")
    return {
        "convolutions_and_linear": low,  # autocast lowers these in the training step
        "norms_and_batch_statistics": "float32",  # float32_norms
        "running_statistics": "float32",  # buffers, updated from the float32 statistics
        "weights_and_optimizer": "float32",  # mixed precision keeps float32 master weights
        "evaluation_and_calibration": "float32",  # outside the training step's autocast
    }
