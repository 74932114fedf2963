"""Pluggable normalization layers behind one registry.

Public API:
    build_norm(name, num_channels, **options) -> nn.Module
    norm_factory(name, **options) -> callable(num_channels) -> nn.Module
    available() -> list of registered names
    get(name) -> registry entry (options schema and metadata)

Every norm accepts (N, C, H, W) and (N, C) inputs. Metadata on each entry:
    batch_stats: the layer normalizes with statistics over the batch (needs > 1 sample per call).
    running_stats: the layer keeps running statistics that it updates in training and uses in eval.
    norm_batch_size: fn(cfg) -> samples per norm call when that is not data.batch_size (ghost_bn: its
        ghost batch; sync_bn: the batch of all ranks); may raise ConfigError for an unusable config.
    samples_per_update: fn(cfg) -> samples behind one running-statistics update when that is not
        norm_batch_size (ghost_bn: the whole batch); used for the EMA horizon (norms/momentum.py).
    conv_transform: fn(conv, norm_options) -> module that build_model applies to every nn.Conv2d of the
        model (gn_ws: weight standardization).

Norms with a `momentum` option (PyTorch convention) also take `keras_momentum` (1 - momentum).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from normbench.norms.registry import NORMS, register_norm

# Importing the family modules fills the registry (in this order: `list` and tests show it).
from normbench.norms import batch as _batch  # noqa: E402,F401  isort: skip
from normbench.norms import sync as _sync  # noqa: E402,F401  isort: skip
from normbench.norms import ghost as _ghost  # noqa: E402,F401  isort: skip
from normbench.norms import renorm as _renorm  # noqa: E402,F401  isort: skip
from normbench.norms import frozen as _frozen  # noqa: E402,F401  isort: skip
from normbench.norms import group as _group  # noqa: E402,F401  isort: skip
from normbench.norms import ws as _ws  # noqa: E402,F401  isort: skip
from normbench.norms import rms as _rms  # noqa: E402,F401  isort: skip
from normbench.norms import frn as _frn  # noqa: E402,F401  isort: skip
from normbench.norms import evonorm as _evonorm  # noqa: E402,F401  isort: skip
from normbench.norms import identity as _identity  # noqa: E402,F401  isort: skip

__all__ = ["NORMS", "available", "build_norm", "get", "norm_factory", "register_norm"]


def available() -> list[str]:
    """Registered norm names, in registration order."""
    return NORMS.names()


def get(name: str):
    """The registry entry for `name` (aliases and spelling variants accepted)."""
    return NORMS.get(name)


def build_norm(name: str, num_channels: int, **options: Any) -> nn.Module:
    """Builds norm `name` for `num_channels` channels; bad names or options raise ValueError."""
    entry = NORMS.get(name)
    return entry.fn(int(num_channels), **entry.validate_options(options))


def norm_factory(name: str, **options: Any) -> Callable[[int], nn.Module]:
    """A `(num_channels) -> nn.Module` factory with the options bound (validated now, not per layer)."""
    entry = NORMS.get(name)
    opts = entry.validate_options(options)

    def factory(num_channels: int) -> nn.Module:
        return entry.fn(int(num_channels), **opts)

    factory.norm_name = entry.name  # type: ignore[attr-defined]
    factory.options = dict(opts)  # type: ignore[attr-defined]
    return factory
