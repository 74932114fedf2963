"""Option checks shared by the norm families: eps, and momentum in the PyTorch and Keras conventions.

PyTorch's `momentum` m is the weight of the *new* batch statistic (running = (1 - m) running + m batch);
Keras' `momentum` is the weight of the *old* value, so Keras 0.99 is PyTorch 0.01. Every norm with a
`momentum` option also takes `keras_momentum`, converted here, so that a sweep can be written in
either convention. `momentum=None` is PyTorch's cumulative moving average (every batch weighted equally).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_MOMENTUM = 0.1  # torch's default for every momentum-based norm in normbench


def keras_to_torch(keras_momentum: float) -> float:
    """Keras momentum (weight of the old value) -> PyTorch momentum (weight of the new batch).

    Rounded to 12 decimals so that the decimal a user typed converts exactly (1 - 0.99 == 0.01, not
    0.010000000000000009); nothing a config can express is finer than that.
    """
    return round(1.0 - float(keras_momentum), 12)


def torch_to_keras(momentum: float) -> float:
    """PyTorch momentum (weight of the new batch) -> Keras momentum (weight of the old value), rounded alike."""
    return round(1.0 - float(momentum), 12)


def check_momentum(norm: str, momentum: float | None) -> None:
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"norm '{norm}': momentum must be in [0, 1] or null (cumulative average), got {momentum}")


def check_eps(norm: str, eps: float, option: str = "eps") -> None:
    if not eps > 0:
        raise ValueError(f"norm '{norm}': {option} must be > 0, got {eps}")


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


def check_shared(norm: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The checks every norm shares, by option name; returns the options as the layer takes them.

    `momentum`/`keras_momentum`: one momentum in PyTorch's convention, in [0, 1] or null (the returned
    options hold it as `momentum`, without `keras_momentum`); `eps` and `ws_eps`: > 0.

    Args:
        norm: the norm's name, for messages.
        options: the options given (missing ones take `defaults`).
        defaults: the entry's declared defaults.
    """
    out = {**defaults, **options}
    if "momentum" in out:
        momentum = resolve_momentum(norm, out["momentum"], out.pop("keras_momentum", None),
                                    defaults.get("momentum", DEFAULT_MOMENTUM))
        check_momentum(norm, momentum)
        out["momentum"] = momentum
    for key in ("eps", "ws_eps"):
        if key in out:
            check_eps(norm, out[key], key)
    return out
