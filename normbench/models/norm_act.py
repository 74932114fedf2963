"""Norm + activation units: the activation after a norm site, or none where the norm takes its place.

FRN (with its TLU) and EvoNorm-B0/S0 are normalization-activation layers: their papers use each in place of
a norm *and* the activation after it (their registry entries declare `replaces_activation`). A model's
`norm_act` option says how its norm sites are followed:

- `paper`: no activation after a norm that replaces it (the papers' setting); every other norm is
  followed by the model's activation as before.
- `always`: the model's activation after every norm site, whatever the norm (normbench before this option
  existed; LeNet's default, so that the committed studies' records, whose stored configs lack the key,
  replay as they ran).

A dropped activation becomes an `nn.Identity` under the same submodule name, so every site keeps its name
(records name layers, e.g. `calib_worst_layer`, `norm_groups`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import nn

NormAct = Literal["paper", "always"]
NORM_ACT_MODES: tuple[str, ...] = ("paper", "always")


def activation_after(norm: Callable[[int], nn.Module], act: Callable[[], nn.Module], mode: str) -> nn.Module:
    """The module that follows a norm site made by factory `norm`: `act()`, or nn.Identity() in its place.

    Args:
        norm: the norm factory the model was given (`build_model` passes one that carries the norm entry's
            `replaces_activation`; a factory without the attribute replaces nothing).
        act: the model's activation class (or a factory of it).
        mode: `paper` or `always` (module docstring).

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in NORM_ACT_MODES:
        raise ValueError(f"norm_act must be one of {', '.join(NORM_ACT_MODES)}, got {mode!r}")
    if mode == "paper" and getattr(norm, "replaces_activation", False):
        return nn.Identity()
    return act()


# What a run config recorded before `model.norm_act` existed ran: the activation after every norm.
LEGACY_NORM_ACT = "always"


def with_legacy_norm_act(config: dict[str, Any]) -> dict[str, Any]:
    """Run config `config` (a stored record's) stating `model.norm_act` where it predates the option.

    Such a config ran `always`, so a sweep or a checkpoint from before resumes under LeNet's default
    (`always`, the same numbers) and is refused, with the difference named, under a ResNet's `paper`.
    """
    model = config.get("model")
    if not isinstance(model, dict) or "norm_act" in model:
        return config
    return {**config, "model": {**model, "norm_act": LEGACY_NORM_ACT}}
