"""Running-statistics momentum: the PyTorch and Keras conventions, and the averaging horizon.

PyTorch's `momentum` m is the weight of the *new* batch statistic (running = (1 - m) running + m batch);
Keras' `momentum` is the weight of the *old* value, so Keras 0.99 is PyTorch 0.01. Every norm with a
`momentum` option also takes `keras_momentum`, converted here, so that a sweep can be written in
either convention. `momentum=None` is PyTorch's cumulative moving average (every batch weighted equally).

The averaging horizon of an exponential moving average with weight m on the new value is about 1/m
updates (the time constant of (1 - m)^t); in samples it is `samples_per_update / m`. For the cumulative
average (momentum None) the horizon is everything the layer saw: the training samples of its updates
(a trailing partial batch counts its own size, not a full batch).
"""

from __future__ import annotations

from typing import Any

from torch import nn

DEFAULT_MOMENTUM = 0.1  # torch's default for every momentum-based norm in normbench


def keras_to_torch(keras_momentum: float) -> float:
    """Keras momentum (weight of the old value) -> PyTorch momentum (weight of the new batch).

    Rounded to 12 decimals so that the decimal a user typed converts exactly (1 - 0.99 == 0.01, not
    0.010000000000000009); nothing a config can express is finer than that.
    """
    return round(1.0 - float(keras_momentum), 12)


def resolve_momentum(norm: str, momentum: float | None, keras_momentum: float | None,
                     default: float | None = DEFAULT_MOMENTUM) -> float | None:
    """The PyTorch momentum a norm uses, given its `momentum` and `keras_momentum` options.

    `keras_momentum`, when set, replaces `momentum`; a `momentum` moved off its default that disagrees
    with it is an error (two conventions, two values: which one was meant is unknowable).

    Raises:
        ValueError: naming the norm and the option, for an out-of-range or conflicting value.
    """
    if keras_momentum is None:
        return momentum
    if not 0.0 <= keras_momentum <= 1.0:
        raise ValueError(f"norm '{norm}': keras_momentum must be in [0, 1], got {keras_momentum}")
    converted = keras_to_torch(keras_momentum)
    if momentum != default and momentum != converted:
        raise ValueError(f"norm '{norm}': give momentum (PyTorch convention) or keras_momentum, not both "
                         f"(momentum={momentum}, keras_momentum={keras_momentum} = momentum {converted})")
    return converted


def running_stats_fields(cfg: Any, net: nn.Module | None = None, samples_seen: int | None = None) -> dict[str, Any]:
    """Summary fields on the norm's running-statistics average for a validated run config.

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
    from normbench.config import norm_batch_size, options_of, per_device_norms
    from normbench.norms import NORMS

    entry = NORMS.get(cfg["norm"]["name"])
    out: dict[str, Any] = {"norm_momentum": None, "norm_keras_momentum": None, "ema_horizon_samples": None}
    if "momentum" not in entry.options:
        return out
    opts = {**entry.defaults(), **options_of(cfg["norm"])}
    default = entry.options["momentum"].default
    m = resolve_momentum(entry.name, opts["momentum"], opts.get("keras_momentum"), default)
    out["norm_momentum"] = m
    out["norm_keras_momentum"] = None if m is None else keras_to_torch(m)
    if not opts.get("track_running_stats", True):
        return out
    per_update = entry.meta.get("samples_per_update")  # e.g. ghost BN: one update covers all its ghost batches
    samples = int(per_update(cfg)) if per_update is not None else norm_batch_size(cfg)
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
