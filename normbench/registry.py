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
    """Canonical lookup key: case-insensitive, '-' and '_' ignored (`batch_norm` == `BatchNorm`); an import path
    (`pkg.mod:Name`, normbench.plugins) is its own key, as Python spells it."""
    if ":" in str(name):
        return str(name)
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
    origin: str = "built-in"  # or 'import path', 'entry point <distribution>' (normbench.plugins)

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
    """Maps names (and aliases) to factories. Unknown names fail with the list of known ones.

    With a `plugin_group`, a name the registry does not know is looked up as an import path (`pkg.mod:Name`)
    or as an entry point of that group, loaded and registered (normbench.plugins); `plugin_meta` is the
    metadata such a plugin may declare as attributes, with its defaults, and `positional` names the leading
    arguments its factory is called with (for messages).
    """

    def __init__(self, kind: str, skip_params: int = 1, *, plugin_group: str | None = None,
                 plugin_meta: Mapping[str, Any] | None = None, positional: tuple[str, ...] = ()):
        self.kind = kind
        self._skip = skip_params  # leading positional parameters that are not options
        self._entries: dict[str, Entry] = {}
        self._lookup: dict[str, str] = {}
        self.plugin_group = plugin_group
        self.plugin_meta = dict(plugin_meta or {})
        self.positional = positional or tuple(f"arg{i}" for i in range(skip_params))

    def register(self, name: str, *, aliases: tuple[str, ...] = (), origin: str = "built-in", **meta: Any):
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            entry = Entry(name=name, fn=fn, options=signature_options(fn, self._skip), meta=meta, kind=self.kind,
                          origin=origin)
            for key in (name, *aliases):
                norm = normalize_name(key)
                if self._lookup.get(norm, name) != name:
                    raise RuntimeError(f"{self.kind} name '{key}' registered twice")
                self._lookup[norm] = name
            self._entries[name] = entry
            return fn

        return deco

    def get(self, name: str) -> Entry:
        """The entry for `name`, loading a plugin of that name when there is one.

        Raises:
            ValueError: an unknown name (the message lists the accepted ones); a plugin that cannot be used
                (normbench.plugins.PluginError, naming it).
        """
        key = self._lookup.get(normalize_name(name))
        if key is None:
            key = self._load_plugin(str(name))
        if key is None:
            accepted = dict.fromkeys([*self.names(), *self.plugin_names()])
            raise ValueError(f"unknown {self.kind} '{name}'; accepted: {', '.join(accepted)}"
                             + (", or an import path package.module:Name" if self.plugin_group else ""))
        return self._entries[key]

    def names(self) -> list[str]:
        """Registered names: the entries registered in code (built-in, or by `register` in a user's program).
        Plugins (import paths, entry points) are apart: they load when named, so which ones a process happened
        to load earlier never changes `norm: all` or any other "every registered" list."""
        return [name for name, e in self._entries.items() if e.origin == "built-in"]

    def plugin_names(self) -> list[str]:
        """Names of the installed entry points of the registry's group (loaded or not)."""
        from normbench.plugins import entry_points

        return list(entry_points(self.plugin_group)) if self.plugin_group else []

    def origins(self) -> dict[str, str]:
        """{name: origin} of the registered entries and of the installed entry points not loaded yet."""
        from normbench.plugins import dist_name, entry_points

        out = {name: e.origin for name, e in self._entries.items()}
        for name, ep in (entry_points(self.plugin_group) if self.plugin_group else {}).items():
            out.setdefault(name, f"entry point {dist_name(ep)}")
        return out

    def __contains__(self, name: str) -> bool:
        return normalize_name(name) in self._lookup

    def _load_plugin(self, name: str) -> str | None:
        """Loads and registers plugin `name` (import path or entry point); None when there is none by that name."""
        if self.plugin_group is None:
            return None
        from normbench.plugins import (
            PluginError,
            check_signature,
            declared_meta,
            entry_points,
            is_import_path,
            load_entry_point,
            load_import_path,
        )

        if is_import_path(name):
            plugin = load_import_path(name, self.kind)
        else:
            found = {normalize_name(n): ep for n, ep in entry_points(self.plugin_group).items()}
            ep = found.get(normalize_name(name))
            if ep is None:
                return None
            plugin = load_entry_point(ep, self.kind)
        check_signature(plugin, self.kind, self.positional)
        meta = declared_meta(plugin, self.kind, self.plugin_meta)
        try:
            self.register(plugin.name, origin=plugin.origin, **meta)(plugin.obj)
        except (NameError, TypeError) as e:  # annotations that do not resolve
            raise PluginError(f"{self.kind} '{plugin.name}': cannot read its option types ({e})") from None
        except RuntimeError as e:  # an entry point named like a built-in entry
            raise PluginError(f"{self.kind} '{plugin.name}' ({plugin.origin}): {e}") from None
        return plugin.name


def signature_options(fn: Callable[..., Any], skip: int) -> dict[str, Option]:
    """Keyword options of `fn` after its first `skip` positional parameters."""
    sig = inspect.signature(fn)
    # a class's options are its __init__'s (get_type_hints of the class gives its attribute annotations)
    hints = typing.get_type_hints(getattr(fn, "__init__") if isinstance(fn, type) else fn)  # noqa: B009
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
