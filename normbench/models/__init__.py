"""Model registry. Models take a norm factory and call it at every normalization site.

Public API:
    build_model(name, norm, num_classes, in_channels, image_size=28, norm_options=None, **options)
    available() -> list of registered model names
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from normbench.models.registry import MODELS, NormSlot, register_model, slot_factory
from normbench.norms import NORMS, norm_factory, replaces_activation
from normbench.norms.naming import LayerKind

# Importing the family modules fills the registry.
from normbench.models import lenet as _lenet  # noqa: E402,F401  isort: skip
from normbench.models import resnet as _resnet  # noqa: E402,F401  isort: skip

__all__ = ["MODELS", "available", "build_model", "get", "register_model"]


def available() -> list[str]:
    return MODELS.names()


def get(name: str):
    return MODELS.get(name)


def build_model(
    name: str,
    norm: str | Callable[[int], nn.Module],
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    norm_options: dict[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """Builds model `name` with `norm` (a registered name or a `(C) -> nn.Module` factory) at every site.

    The architecture is first built with placeholder slots that record each site's channel count;
    each slot is then replaced by the real norm, so an error (e.g. GroupNorm groups that do not divide
    a layer's channels) names the layer. Norm layers keep their own initialization (weight 1, bias 0
    where they have them). A norm whose registry entry has a `conv_transform` (gn_ws: weight
    standardization) then gets it applied to every nn.Conv2d; the model's `init_after_norms` hook
    (zero_init_residual) runs last. The model's `norm_sites` lists the sites' submodule names and
    `norm_site_kinds` the layer kind each is fed (`conv` or `fc`: one forward pass of a blank image through
    the slots finds it). The builder learns whether the norm replaces the activation after it (the entry's
    `replaces_activation`, for its `norm_act` option) from the slot factory it is given.
    """
    entry = MODELS.get(name)
    factory = norm_factory(norm, **(norm_options or {})) if isinstance(norm, str) else norm
    if not isinstance(norm, str) and norm_options:
        raise ValueError("norm_options only go with a norm name, not with a factory")
    opts = entry.validate_options(options)
    model = entry.fn(slot_factory(replaces_activation(factory)), num_classes, in_channels, image_size, **opts)
    kinds = site_kinds(model, in_channels, image_size)
    sites = []
    for site, slot in list(model.named_modules()):
        if isinstance(slot, NormSlot):
            sites.append(site)
            try:
                layer = factory(slot.num_channels)
            except ValueError as e:
                raise ValueError(f"{e} (layer '{site}' of {entry.name})") from None
            model.set_submodule(site, layer)
    apply_conv_transform(model, factory)
    hook = getattr(model, "init_after_norms", None)
    if hook is not None:
        hook()
    model.norm_sites = sites
    model.norm_site_kinds = {site: kinds[site] for site in sites if site in kinds}
    return model


def site_kinds(model: nn.Module, in_channels: int, image_size: int) -> dict[str, LayerKind]:
    """{norm site: `conv` or `fc`} of a model whose sites are still NormSlots, from one forward pass.

    The input is a blank (zero) image and the slots pass it through, so nothing random is drawn and no
    state changes. A site the pass does not reach (or a forward that fails, e.g. a plugin model that wants
    another input) has no kind: the record then leaves it out of `norm_layers`.
    """
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except Exception:  # noqa: BLE001 - the kinds are a record field, not a reason to refuse the model
        pass
    return {site: m.kind for site, m in model.named_modules() if isinstance(m, NormSlot) and m.kind is not None}


def apply_conv_transform(model: nn.Module, factory: Callable[[int], nn.Module]) -> None:
    """Replaces every nn.Conv2d of `model` by the norm entry's `conv_transform(conv, options)`, if it has one.

    Only factories made by `norm_factory` (which carry `norm_name` and `options`) name an entry.
    """
    name = getattr(factory, "norm_name", None)
    transform = NORMS.get(name).meta.get("conv_transform") if name is not None else None
    if transform is None:
        return
    options = dict(getattr(factory, "options", {}))
    for site, conv in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]:
        model.set_submodule(site, transform(conv, options))

