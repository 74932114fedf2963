"""Run-level facts of a validated run config: how the norm layers are fed, and their averaging horizon.

The norm library answers in plain numbers (`normbench.norms.norm_batch_size` and `samples_per_update` for a
`BatchLayout`); this module builds the layout from a run config and derives what a run records and checks:
the batch of one forward pass, of one optimizer step and of one norm call, whether norms normalize per
emulated device, and the running-statistics momentum in both conventions with its horizon.

The averaging horizon of an exponential moving average with weight m on the new value is about 1/m
updates (the time constant of (1 - m)^t); in samples it is `samples_per_update / m`. For the cumulative
average (momentum None) the horizon is everything the layer saw: the training samples of its updates
(a trailing partial batch counts its own size, not a full batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from normbench import norms
from normbench.errors import ConfigError
from normbench.norms.options import torch_to_keras

# The config keys behind each number of a BatchLayout (what the norm library's messages then name).
LAYOUT_KEYS = {"batch_size": "data.batch_size", "devices": "trainer.devices",
               "emulated_devices": "trainer.emulate_devices", "accumulate": "trainer.accumulate_grad_batches",
               "drop_last": "data.drop_last"}


def norm_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The norm section's options (everything but `name`)."""
    return {k: v for k, v in dict(cfg["norm"]).items() if k != "name"}


def batch_layout(cfg: Mapping[str, Any]) -> norms.BatchLayout:
    """How the run feeds its norm layers, in the norm library's plain numbers."""
    data, trainer = cfg["data"], cfg["trainer"]
    return norms.BatchLayout(batch_size=int(data["batch_size"]), devices=int(trainer["devices"]),
                             emulated_devices=int(trainer.get("emulate_devices", 1)),
                             accumulate=int(trainer["accumulate_grad_batches"]),
                             drop_last=bool(data.get("drop_last", True)), names=LAYOUT_KEYS)


def norm_batch_size(cfg: Mapping[str, Any]) -> int:
    """Samples each norm call sees in training: the per-device micro-batch (or the norm's own sub-batch).

    Raises:
        ConfigError: the norm cannot work with the run's batches (e.g. a ghost batch that does not divide them).
    """
    try:
        return norms.norm_batch_size(cfg["norm"]["name"], norm_options(cfg), batch_layout(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def step_batch_size(cfg: Mapping[str, Any]) -> int:
    """Samples in one training forward pass of one process: data.batch_size per emulated device."""
    return int(cfg["data"]["batch_size"]) * int(cfg["trainer"].get("emulate_devices", 1))


def effective_batch_size(cfg: Mapping[str, Any]) -> int:
    """Samples behind one optimizer step: batch x accumulation x devices x emulated devices."""
    t = cfg["trainer"]
    return step_batch_size(cfg) * int(t["accumulate_grad_batches"]) * int(t["devices"])


def per_device_norms(cfg: Mapping[str, Any]) -> bool:
    """Whether the run's norm layers normalize per emulated device (batch-statistics norms that do not sync)."""
    entry = norms.get(cfg["norm"]["name"])
    return (int(cfg["trainer"].get("emulate_devices", 1)) > 1 and bool(entry.meta.get("batch_stats"))
            and not entry.meta.get("syncs_devices"))


def use_torch_sync_batchnorm(norm: str, accelerator: str, devices: int) -> bool:
    """Whether a run should let Lightning swap the sync_bn layers for torch's nn.SyncBatchNorm.

    Only for multi-GPU runs: torch's layer raises on CPU tensors, and DDP refuses CPU modules holding it.
    """
    return norms.get(norm).name == "sync_bn" and accelerator == "gpu" and devices > 1


def running_stats_fields(cfg: Mapping[str, Any], net: nn.Module | None = None,
                         samples_seen: int | None = None) -> dict[str, Any]:
    """Record fields on the norm's running-statistics average for a validated run config.

    Returns:
        `norm_momentum` (PyTorch convention; None = cumulative average), `norm_keras_momentum`
        (1 - momentum; None for the cumulative average) and `ema_horizon_samples`: samples per
        running-statistics update / momentum, or, for the cumulative average, the training samples the
        updates saw: `samples_seen` (the samples of every training step; each step updates the running
        statistics) once `net`'s first norm with `num_batches_tracked` has updated, else samples per update
        x the updates made (None without `net`).
        All three are None for a norm without a momentum option; the horizon is None when the
        norm keeps no running statistics (`track_running_stats=false`) or never updates them (momentum 0).
    """
    name = cfg["norm"]["name"]
    out: dict[str, Any] = {"norm_momentum": None, "norm_keras_momentum": None, "ema_horizon_samples": None}
    if "momentum" not in norms.get(name).options:
        return out
    given = norm_options(cfg)
    opts = norms.check_options(name, given)
    m = opts["momentum"]
    out["norm_momentum"] = m
    out["norm_keras_momentum"] = None if m is None else torch_to_keras(m)
    if not opts.get("track_running_stats", True):
        return out
    samples = norms.samples_per_update(name, given, batch_layout(cfg))
    if per_device_norms(cfg):  # one update averages the statistics of every emulated device's slice
        samples *= int(cfg["trainer"]["emulate_devices"])
    if m is None:
        updates = _updates_made(net)
        if updates is None:
            out["ema_horizon_samples"] = None
        elif samples_seen is not None:
            out["ema_horizon_samples"] = int(samples_seen) if updates > 0 else 0
        else:
            out["ema_horizon_samples"] = samples * updates
    elif m > 0:
        out["ema_horizon_samples"] = samples / m
    return out


def _updates_made(net: nn.Module | None) -> int | None:
    if net is None:
        return None
    for m in net.modules():
        count = getattr(m, "num_batches_tracked", None)
        if count is not None:
            return int(count)
    return None
