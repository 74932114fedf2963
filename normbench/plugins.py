"""Norms, models and datasets from outside the package: an import path or an installed entry point.

A registry (normbench.registry.Registry) asks this module for a name it does not know:

- an import path `package.module:Name` (or `package.module:Outer.Name`) is imported and registered under
  that exact path (`norm=my_pkg.layers:MyNorm`);
- a name that an installed distribution declares in the registry's entry-point group (`normbench.norms`,
  `normbench.models`, `normbench.datasets`) is loaded and registered under the entry point's name
  (`pip install my-norm` makes `norm=mynorm` available).

The loaded object is a factory like a built-in one (a class or a function): a norm is called as
`obj(num_channels, **options)`, a model builder as `obj(norm, num_classes, in_channels, image_size, **options)`,
a dataset loader as `obj(root, download, **options) -> RawSplits`. Its keyword options, with their annotations
and defaults, are its schema, checked with the same one-line errors as a built-in entry's. What it declares
about itself are attributes of the object with the names of the registry's metadata (for a norm:
`batch_stats`, `replaces_activation`, `syncs_devices`, `check`, `norm_batch_size`, `samples_per_update`,
`conv_transform`, as `normbench.norms.registry.register_norm` takes them); an attribute that is absent takes
the registry's default.

Anything wrong with a plugin (it does not import, is not callable, its signature cannot take the registry's
positional arguments, an option without a default, a metadata attribute of the wrong kind) is a PluginError
whose one line names the plugin: the config layer reports it as a ConfigError (exit 2) before any work.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

IMPORT_PATH_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

BUILT_IN = "built-in"


class PluginError(ValueError):
    """A plugin that cannot be used: one line naming it and what is wrong."""


def is_import_path(name: str) -> bool:
    """Whether `name` is meant as an import path (`module:Name`): it has a colon, which no registered name has."""
    return ":" in str(name)


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin object and where it came from."""

    name: str  # the name it is registered under: the import path, or the entry point's name
    obj: Callable[..., Any]
    origin: str  # 'import path' or 'entry point <dist>'


def load_import_path(path: str, kind: str) -> Plugin:
    """Imports `package.module:Name`.

    Raises:
        PluginError: malformed, the module fails to import, or it has no such attribute.
    """
    if not IMPORT_PATH_RE.match(path):
        raise PluginError(f"{kind} '{path}' is not an import path; expected package.module:Name")
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - a plugin's import can fail in any way; name it in one line
        raise PluginError(f"{kind} '{path}': cannot import module '{module_name}' ({_reason(e)})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{kind} '{path}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return Plugin(path, obj, "import path")


def entry_points(group: str) -> dict[str, Any]:
    """{name: EntryPoint} of the installed distributions' entry points in `group`."""
    from importlib.metadata import entry_points as installed

    return {ep.name: ep for ep in installed(group=group)}


def dist_name(ep: Any) -> str:
    """The name of the distribution that declares entry point `ep` ('?' when unknown)."""
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "?"


def load_entry_point(ep: Any, kind: str) -> Plugin:
    """Loads entry point `ep`.

    Raises:
        PluginError: it fails to load; the message names the entry point, its target and distribution.
    """
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001 - as for an import path
        raise PluginError(f"{kind} '{ep.name}' (entry point {ep.value} of {dist_name(ep)}): cannot load it "
                          f"({_reason(e)})") from None
    return Plugin(ep.name, obj, f"entry point {dist_name(ep)}")


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def check_signature(plugin: Plugin, kind: str, positional: tuple[str, ...]) -> None:
    """Checks that `plugin.obj` can be called with `positional` arguments first and keyword options after.

    Raises:
        PluginError: not callable, no readable signature, fewer positional parameters than `positional`, or
            an option without a default (the config could not leave it out).
    """
    what = f"{kind} '{plugin.name}'"
    expected = f"({', '.join(positional)}, **options)"
    if not callable(plugin.obj):
        raise PluginError(f"{what} is a {type(plugin.obj).__name__}, not a class or function {expected}")
    try:
        sig = inspect.signature(plugin.obj)
    except (TypeError, ValueError) as e:
        raise PluginError(f"{what}: cannot read its signature ({_reason(e)}); expected {expected}") from None
    params = list(sig.parameters.values())
    takes_args = any(p.kind is p.VAR_POSITIONAL for p in params)
    leading = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:len(positional)]
    if len(leading) < len(positional) and not takes_args:
        raise PluginError(f"{what} takes {sig} but is called as {expected}")
    for p in params[len(leading):]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty:
            raise PluginError(f"{what}: option '{p.name}' has no default; every option after "
                              f"{', '.join(positional)} needs one")


def declared_meta(plugin: Plugin, kind: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata `plugin.obj` declares as attributes named as `defaults`' keys, else the defaults.

    A default that is a bool takes a bool; any other (None: a hook) takes a callable or None. Keys whose
    value ends up None are left out, as `register_norm` leaves out hooks it was not given.

    Raises:
        PluginError: an attribute of the wrong kind.
    """
    out: dict[str, Any] = {}
    for key, default in defaults.items():
        value = getattr(plugin.obj, key, default)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise PluginError(f"{kind} '{plugin.name}': attribute '{key}' must be true or false, got {value!r}")
        elif value is not None and not callable(value):
            raise PluginError(f"{kind} '{plugin.name}': attribute '{key}' must be a function, got {value!r}")
        if value is not None:
            out[key] = value
    return out
