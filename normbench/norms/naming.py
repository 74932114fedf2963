"""What normalization a layer computes, by the kind of layer it follows (convolution or fully connected).

One registered norm may compute different normalizations on (N, C, H, W) and on (N, C) inputs: `in` is
InstanceNorm after a convolution and a LayerNorm over the C features after a fully connected layer (an
(N, C) input has no spatial extent to normalize over; `normbench.norms.group`). A run's record names what
ran per layer kind (`norm_layers`), so that no such substitution is silent.

A layer class may declare `applied_names = {kind: name}` for the kinds where its class name would mislead;
otherwise the class name is the name. Kinds: `conv` (a norm fed (N, C, ...) maps) and `fc` (fed (N, C)).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from torch import nn

LayerKind = Literal["conv", "fc"]
KINDS: tuple[LayerKind, ...] = ("conv", "fc")


def input_kind(ndim: int) -> LayerKind:
    """The layer kind of a norm input of `ndim` dimensions: `fc` for (N, C), else `conv`."""
    return "fc" if ndim == 2 else "conv"


def applied_name(layer: nn.Module, kind: LayerKind) -> str:
    """The normalization `layer` computes on inputs of `kind` (its `applied_names`, else its class name).

    A wrapper that normalizes per emulated device (`PerDeviceNorm`, which holds the real layer as `norm`
    and says so with `per_device = True`) is named after the layer it wraps, with "per device".
    """
    inner = getattr(layer, "norm", None)
    if getattr(layer, "per_device", False) and isinstance(inner, nn.Module):
        return f"{applied_name(inner, kind)} per device"
    declared: Mapping[str, str] = getattr(layer, "applied_names", {}) or {}
    return declared.get(kind, type(layer).__name__)


def norm_layers(model: nn.Module, sites: Iterable[str], kinds: Mapping[str, LayerKind]) -> dict[str, str]:
    """{layer kind: the normalization its norm sites computed} over `sites` of `model`.

    Args:
        model: a built model.
        sites: its norm sites' submodule names (`model.norm_sites`).
        kinds: {site: layer kind} (`model.norm_site_kinds`, found by `build_model`).

    Returns:
        One entry per kind that has a norm site, in the order conv, fc; sites of one kind that computed
        different normalizations are listed together, in site order, joined by " + ".
    """
    names: dict[str, list[str]] = {}
    for site in sites:
        kind = kinds.get(site)
        if kind is None:
            continue
        name = applied_name(model.get_submodule(site), kind)
        if name not in names.setdefault(kind, []):
            names[kind].append(name)
    return {kind: " + ".join(names[kind]) for kind in KINDS if kind in names}
