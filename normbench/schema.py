"""One way to check options: typed dataclass schemas with ranges (used by the run config, normbench.config).

A schema is a dataclass. A field's annotation is its type (int, float, bool, str, Literal[...], X | None,
list[...], dict[...], Any), its default the default, and `option(...)` adds what the type cannot say: a range
(`low`, `high`) and how the message phrases it. `check`
returns the values coerced to their types and completed with the defaults, or raises ConfigError with one
line that names the key and what is accepted:

    unknown key 'data.colour'; accepted: name, root, batch_size, ...
    data.batch_size must be an integer, got 'big'
    optim.lr must be > 0, got 0.0
    seed must be in [0, 4294967295] (numpy's seed range), got -1

Registry entries (norms, models, datasets) declare their options by their factory's signature, checked with
the same `coerce` (normbench.registry); `check` takes them as `extra` options beside a schema's own fields.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from normbench.errors import ConfigError
from normbench.registry import Option, coerce


@dataclass(frozen=True)
class Rule:
    """What a field accepts beyond its type.

    Attributes:
        low, high: the accepted range (None: unbounded); `low_open`/`high_open` exclude the bound itself.
        note: said after the range, e.g. "(numpy's seed range)".
        say_null: a nullable field's message adds "or null" (False where null means "the default" and
            the established message leaves it out).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""
    say_null: bool = True

    def describe(self, nullable: bool) -> str:
        if self.low is not None and self.high is not None:
            text = (f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                    f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            text = ""
        if nullable and self.say_null:
            text += " or null"
        return f"{text} {self.note}" if self.note else text

    def holds(self, value: Any) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **rule: Any) -> Any:
    """A dataclass field with a `Rule` (see Rule's attributes for the keywords)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"rule": Rule(**rule)})


@functools.cache
def _fields(schema: type) -> dict[str, tuple[Any, Rule, dataclasses.Field]]:
    hints = typing.get_type_hints(schema)  # annotations may be postponed (strings)
    return {f.name: (hints[f.name], f.metadata.get("rule", Rule()), f) for f in dataclasses.fields(schema)}


def keys(schema: type) -> list[str]:
    """The schema's keys, in declaration order."""
    return list(_fields(schema))


def defaults(schema: type) -> dict[str, Any]:
    """The schema's defaults (fields without one are left out)."""
    out = {}
    for name, (_, _, f) in _fields(schema).items():
        if f.default is not MISSING:
            out[name] = f.default
        elif f.default_factory is not MISSING:
            out[name] = f.default_factory()
    return out


def _nullable(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def check_value(value: Any, tp: Any, rule: Rule, path: str) -> Any:
    """One value against its type and rule; returns it coerced."""
    try:
        value = coerce(value, tp, path)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if value is not None and (rule.low is not None or rule.high is not None) and not rule.holds(value):
        raise ConfigError(f"{path} must be {rule.describe(_nullable(tp))}, got {value!r}")
    return value


def check(values: Mapping[str, Any], schema: type, where: str = "", *, extra: Mapping[str, Option] | None = None,
          extra_what: str = "") -> dict[str, Any]:
    """`values` checked against `schema` (and registry options `extra`), coerced, with defaults filled in.

    Args:
        values: the given options.
        schema: the dataclass that declares them.
        where: the section's name, prefixed to keys in messages (`data` -> `data.batch_size`).
        extra: options a registry entry declares beside the schema's fields (checked by their type).
        extra_what: said after an unknown key, e.g. " for norm=bn".

    Raises:
        ConfigError: an unknown key, a wrong type or a value out of range; one line naming the key.
    """
    known = _fields(schema)
    extra = extra or {}
    out: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key in known:
            tp, rule, _ = known[key]
            out[key] = check_value(value, tp, rule, path)
        elif key in extra:
            out[key] = check_value(value, extra[key].type, Rule(), path)
        else:
            raise ConfigError(f"unknown key '{path}'{extra_what}; accepted: {', '.join([*known, *extra])}")
    for name, default in defaults(schema).items():
        out.setdefault(name, default)
    for name, opt in extra.items():
        out.setdefault(name, opt.default)
    return out

