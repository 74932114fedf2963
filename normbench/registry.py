"""Name -> factory registries shared by norms, models and datasets.

Every entry's keyword options are declared by its factory's signature (annotations and defaults), so
the signature is the schema: `validate_options` rejects unknown options and wrong types with one line
that lists what the entry accepts, and the config layer uses the same check.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def normalize_name(name: str) -> str:
    """Canonical lookup key: case-insensitive, '-' and '_' ignored (`batch_norm` == `BatchNorm`)."""
    return str(name).lower().replace("_", "").replace("-", "")


@dataclass(frozen=True)
class Option:
    """One keyword option of a registered factory."""

    name: str
    type: Any
    default: Any

    @property
    def type_name(self) -> str:
        return type_name(self.type)


@dataclass
class Entry:
    """A registered factory plus its metadata (e.g. whether a norm uses batch statistics)."""

    name: str
    fn: Callable[..., Any]
    options: dict[str, Option]
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "entry"

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Returns the options coerced to their declared types; raises ValueError on a bad one."""
        out = {}
        for key, value in options.items():
            if key not in self.options:
                accepted = ", ".join(self.options) or "(none)"
                raise ValueError(f"{self.kind} '{self.name}' has no option '{key}'; accepted: {accepted}")
            out[key] = coerce(value, self.options[key].type, f"{self.kind} '{self.name}' option '{key}'")
        return out

    def defaults(self) -> dict[str, Any]:
        return {k: o.default for k, o in self.options.items()}


class Registry:
    """Maps names (and aliases) to factories. Unknown names fail with the list of known ones."""

    def __init__(self, kind: str, skip_params: int = 1):
        self.kind = kind
        self._skip = skip_params  # leading positional parameters that are not options
        self._entries: dict[str, Entry] = {}
        self._lookup: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), **meta: Any):
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            entry = Entry(name=name, fn=fn, options=signature_options(fn, self._skip), meta=meta, kind=self.kind)
            for key in (name, *aliases):
                norm = normalize_name(key)
                if self._lookup.get(norm, name) != name:
                    raise RuntimeError(f"{self.kind} name '{key}' registered twice")
                self._lookup[norm] = name
            self._entries[name] = entry
            return fn

        return deco

    def get(self, name: str) -> Entry:
        key = self._lookup.get(normalize_name(name))
        if key is None:
            raise ValueError(f"unknown {self.kind} '{name}'; accepted: {', '.join(self.names())}")
        return self._entries[key]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return normalize_name(name) in self._lookup


def signature_options(fn: Callable[..., Any], skip: int) -> dict[str, Option]:
    """Keyword options of `fn` after its first `skip` positional parameters."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params = list(sig.parameters.values())[skip:]
    out = {}
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        out[p.name] = Option(p.name, hints.get(p.name, Any), default)
    return out


_UNIONS = (typing.Union, types.UnionType)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in _UNIONS:
        return " | ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


_NONE_STRINGS = {"none", "null", "~"}
_PHRASES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
            list: "a list"}


def type_phrase(tp: Any) -> str:
    """What a value of type hint `tp` is, in words ('an integer or null')."""
    origin = typing.get_origin(tp)
    if origin in _UNIONS:
        return " or ".join("null" if a is type(None) else type_phrase(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return f"one of {', '.join(map(str, typing.get_args(tp)))}"
    return _PHRASES.get(origin or tp, type_name(tp))


def coerce(value: Any, tp: Any, what: str) -> Any:
    """Checks `value` against type hint `tp` (int, float, bool, str, Optional, Literal, list).

    Ints are accepted for floats, NaN and infinities are not; the string 'None' for optional fields (sweep
    files often say None).
    """
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in _UNIONS:
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in _NONE_STRINGS)
        if is_none and type(None) in args:
            return None
        if isinstance(value, float) and not math.isfinite(value) and float in args:
            return coerce(value, float, what)  # its own message: a finite number is what is missing
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, what)
            except ValueError:
                pass
        raise ValueError(f"{what} must be {type_phrase(tp)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or str(value) == str(c):
                return c
        raise ValueError(f"{what} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{what} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{what} must be a list, got {value!r}")
        return [coerce(v, inner, what) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{what} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # NaN/inf would train (or not) and then be stored as null: the record could not say what ran.
            if not math.isfinite(value):
                raise ValueError(f"{what} must be a finite number, got {value!r}")
            return float(value)
        raise ValueError(f"{what} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{what} must be a string, got {value!r}")
    if value is None:
        raise ValueError(f"{what} must not be null")
    return value
