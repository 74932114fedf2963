"""The norm registry, and what a norm entry may declare about itself in plain numbers.

Each family module registers its factories here. The norm library knows nothing of a run's config: what
depends on how a layer is fed (the batch it normalizes, the samples behind one running-statistics update)
is asked of the entry with a `BatchLayout`, plain numbers that the caller fills in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from normbench.registry import Registry

# What a plugin norm (normbench.plugins) may declare as attributes, and what it is when it does not. A norm
# that does not say is taken to use batch statistics: that only refuses a batch of one sample and splits the
# batch per emulated device, which a per-sample norm computes the same either way, while the opposite default
# would let a batch norm see a whole emulated multi-device batch.
PLUGIN_META: dict[str, Any] = {"batch_stats": True, "syncs_devices": False, "replaces_activation": False,
                               "check": None, "norm_batch_size": None, "samples_per_update": None,
                               "conv_transform": None}

NORMS = Registry("norm", plugin_group="normbench.norms", plugin_meta=PLUGIN_META, positional=("num_channels",))


@dataclass(frozen=True)
class BatchLayout:
    """How a norm layer is fed in training, in plain numbers.

    Attributes:
        batch_size: samples per forward pass of one (real or emulated) device: the per-device micro-batch.
        devices: data-parallel processes that each run a share of the batch.
        emulated_devices: data-parallel devices emulated on one (each normalizes its own `batch_size`).
        accumulate: micro-batches per optimizer step (gradient accumulation).
        drop_last: whether a trailing partial batch is dropped (else it comes as a smaller batch).
        names: how the caller calls these numbers, for messages (e.g. {'batch_size': 'data.batch_size'}).
    """

    batch_size: int
    devices: int = 1
    emulated_devices: int = 1
    accumulate: int = 1
    drop_last: bool = True
    names: Mapping[str, str] = field(default_factory=dict)

    def name(self, attr: str) -> str:
        """The caller's name of `attr` (the attribute's own name when the caller gave none)."""
        return self.names.get(attr, attr)


def register_norm(
    name: str,
    *,
    aliases: tuple[str, ...] = (),
    batch_stats: bool = False,
    check: Callable[[dict[str, Any]], None] | None = None,
    norm_batch_size: Callable[[dict[str, Any], BatchLayout], int] | None = None,
    samples_per_update: Callable[[dict[str, Any], BatchLayout], int] | None = None,
    syncs_devices: bool = False,
    conv_transform: Callable[..., Any] | None = None,
    replaces_activation: bool = False,
):
    """Registers a `(num_channels, **options) -> nn.Module` factory under `name`.

    Args:
        aliases: other names that find the entry (spelling variants are found anyway).
        batch_stats: the layer normalizes with statistics over the batch (a batch of one sample is
            meaningless for it).
        check: `check(options)` raises ValueError for a bad option value that needs no channel count
            (ranges, conflicting options), so that a config can be checked before any layer is built.
            Every norm also gets the shared checks of `normbench.norms.options.check_shared` (eps, momentum).
        norm_batch_size: `fn(options, layout) -> samples` each call of the layer normalizes together when
            that is not `layout.batch_size` (ghost_bn: its ghost batch; sync_bn: the batch of every device);
            raises ValueError for a layout the layer cannot work with.
        samples_per_update: `fn(options, layout) -> samples` behind one running-statistics update when that
            is not the norm batch size (ghost_bn: the whole batch; bn with accumulation_aware: a step's
            micro-batches): the EMA horizon's unit.
        syncs_devices: the layer reduces its statistics over the data-parallel devices itself.
        conv_transform: `fn(conv, options) -> module` that build_model applies to every nn.Conv2d of the
            model (gn_ws: weight standardization).
        replaces_activation: the layer includes its nonlinearity and its paper uses it in place of the norm
            *and* the activation that follows it (FRN with its TLU, EvoNorm-B0/S0); a model built with
            `norm_act=paper` then puts no activation after it.
    """
    meta: dict[str, Any] = {"batch_stats": batch_stats, "syncs_devices": syncs_devices,
                            "replaces_activation": replaces_activation}
    for key, hook in (("check", check), ("norm_batch_size", norm_batch_size),
                      ("samples_per_update", samples_per_update), ("conv_transform", conv_transform)):
        if hook is not None:
            meta[key] = hook
    return NORMS.register(name, aliases=aliases, **meta)
