"""Pluggable normalization layers behind one registry: a library that knows nothing of a run's config.

Public API:
    build_norm(name, num_channels, **options) -> nn.Module
    norm_factory(name, **options) -> callable(num_channels) -> nn.Module
    check_options(name, options) -> options as the layer takes them (ValueError for a bad one)
    norm_batch_size(name, options, layout) -> samples each call normalizes together
    samples_per_update(name, options, layout) -> samples behind one running-statistics update
    replaces_activation(name or factory) -> the norm takes the place of the activation after it (FRN, EvoNorm)
    available() -> list of registered names
    get(name) -> registry entry (options schema and metadata)

Every norm accepts (N, C, H, W) and (N, C) inputs. What an entry declares about itself (batch statistics,
its own option checks, its norm batch size for a `BatchLayout` of plain numbers, ...): see
`normbench.norms.registry.register_norm`. Options are checked before a factory runs: their types (the
factory's signature), the shared checks of `normbench.norms.options` and the entry's own `check`; a factory
gets `momentum` in PyTorch's convention, so norms with a `momentum` option also take `keras_momentum`
(1 - momentum), folded in before the factory sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from normbench.norms.options import check_shared
from normbench.norms.registry import NORMS, BatchLayout, register_norm

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

__all__ = ["NORMS", "BatchLayout", "available", "build_norm", "check_options", "get", "norm_batch_size",
           "norm_factory", "register_norm", "replaces_activation", "samples_per_update"]


def available() -> list[str]:
    """Registered norm names, in registration order."""
    return NORMS.names()


def get(name: str):
    """The registry entry for `name` (aliases and spelling variants accepted)."""
    return NORMS.get(name)


def check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` of norm `name` checked without building a layer; returns them as the factory takes them.

    Checks the types (the factory's signature), the entry's own `check` and the shared checks (eps,
    momentum in either convention). What depends on the channel count (e.g. GroupNorm's groups) is checked
    when a layer is built.

    Raises:
        ValueError: an unknown name or option, or a bad value; the message names the norm and the option.
    """
    entry = NORMS.get(name)
    given = entry.validate_options(options)
    own = entry.meta.get("check")
    if own is not None:
        own({**entry.defaults(), **given})
    return check_shared(entry.name, given, entry.defaults())


def build_norm(name: str, num_channels: int, **options: Any) -> nn.Module:
    """Builds norm `name` for `num_channels` channels; bad names or options raise ValueError."""
    return NORMS.get(name).fn(int(num_channels), **check_options(name, options))


def norm_factory(name: str, **options: Any) -> Callable[[int], nn.Module]:
    """A `(num_channels) -> nn.Module` factory with the options bound (checked now, not per layer).

    The factory carries `norm_name` and `options` (as given, after the type checks): model code reads them,
    e.g. for the entry's `conv_transform`.
    """
    entry = NORMS.get(name)
    given = entry.validate_options(options)
    opts = check_options(name, given)

    def factory(num_channels: int) -> nn.Module:
        return entry.fn(int(num_channels), **opts)

    factory.norm_name = entry.name  # type: ignore[attr-defined]
    factory.options = dict(given)  # type: ignore[attr-defined]
    return factory


def replaces_activation(norm: str | Callable[[int], nn.Module]) -> bool:
    """Whether norm `norm` (a name, or a factory) takes the place of the activation after it in its paper.

    A factory says so with a `replaces_activation` attribute, or through the entry it names (`norm_name`,
    as `norm_factory` and `per_device` set it); any other factory replaces nothing.
    """
    if isinstance(norm, str):
        return bool(NORMS.get(norm).meta.get("replaces_activation"))
    declared = getattr(norm, "replaces_activation", None)
    if declared is not None:
        return bool(declared)
    name = getattr(norm, "norm_name", None)
    return name is not None and bool(NORMS.get(name).meta.get("replaces_activation"))


def norm_batch_size(name: str, options: Mapping[str, Any], layout: BatchLayout) -> int:
    """Samples each call of norm `name` normalizes together in training, for `layout`.

    `layout.batch_size` unless the entry declares otherwise (ghost_bn: its ghost batch; sync_bn: the batch of
    every device).

    Raises:
        ValueError: the norm cannot work with `layout` (e.g. a ghost batch size that does not divide the batch).
    """
    entry = NORMS.get(name)
    hook = entry.meta.get("norm_batch_size")
    return int(hook({**entry.defaults(), **options}, layout)) if hook is not None else layout.batch_size


def samples_per_update(name: str, options: Mapping[str, Any], layout: BatchLayout) -> int:
    """Samples behind one running-statistics update of norm `name` (the unit of its EMA horizon).

    The norm batch size unless the entry declares otherwise (ghost_bn: the whole batch, its ghost batches
    averaged; bn with accumulation_aware: the micro-batches of an optimizer step).
    """
    entry = NORMS.get(name)
    hook = entry.meta.get("samples_per_update")
    if hook is not None:
        return int(hook({**entry.defaults(), **options}, layout))
    return norm_batch_size(name, options, layout)
