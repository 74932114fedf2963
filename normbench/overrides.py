"""The one grammar of `key=value` arguments: Hydra's override syntax.

The run config (`norm=gn`, `optim.lr=0.1`), a sweep's command-line settings (`sweep.n_workers=4`) and the
overrides a sweep plans for its trials (`format_value`) are read and written here, by one Hydra override
parser: a value is a number, true/false, null, a quoted or bare string, a list `[a,b]` or a mapping
`{key: value}`. YAML's spellings of the special floats (`.nan`, `.inf`, `-.inf`) read as those floats, as in
the YAML files the same options come from. `a,b` (Hydra's sweep syntax: also `range(1,4)`) is refused, except
by `parse_multirun` (`run -m`, normbench.sweep.multirun: a grid study). `format_value` writes a value back so
that it parses to the same thing. The report commands read their `key=value` options with the same grammar
(normbench.report.study.parse_report_args)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from normbench.errors import ConfigError

_BARE_RE = re.compile(r"^[\w./:@+-]+$")
_YAML_FLOATS = {".nan": float("nan"), ".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf")}


@functools.cache
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


@dataclass(frozen=True)
class Override:
    """One parsed `key=value` argument.

    Attributes:
        text: the argument as given (after `~/path` values were quoted).
        key: the key (Hydra's key or group, e.g. `norm`, `optim.lr`, `sweep.n_workers`).
        value: the value, read by the grammar.
        prefix: `+`, `++` or `~` before the key (Hydra's add, force-add and delete), else ''.
        package: Hydra's `@package`, if any.
    """

    text: str
    key: str
    value: Any
    prefix: str = ""
    package: str | None = None
    sweep: tuple[Any, ...] | None = None  # the values of a multirun override (`norm=bn,gn`); None: one value


def quote_home(text: str) -> str:
    """`key=~/path` -> `key='~/path'`: the grammar has no bare `~` in values; the loaders expand it."""
    key, sep, value = text.partition("=")
    if sep and value.startswith("~") and "'" not in value and '"' not in value:
        return f"{key}='{value}'"
    return text


def _hydra_override(text: str):
    try:
        (ov,) = _parser().parse_overrides([text])
    except Exception as e:  # noqa: BLE001 - hydra's parse errors are several classes
        raise ConfigError(f"cannot parse override '{text}': {str(e).splitlines()[0]}") from None
    return ov


def parse(text: str) -> Override:
    """Parses one `key=value` argument.

    Raises:
        ConfigError: not override syntax, or several values (`a,b`: a sweep is declared in a sweep file, or
            run with `run -m`).
    """
    text = quote_home(text)
    ov = _hydra_override(text)
    if ov.is_sweep_override():
        raise ConfigError(f"override '{text}' lists several values; run it as a multirun (`run -m ...`: a grid "
                          "study) or declare the sweep in a sweep file")
    return _override(text, ov)


def parse_multirun(text: str) -> Override:
    """Parses one argument of `run -m`: one value, or several (`a,b`, `range(2,5)`) as `Override.sweep`.

    Raises:
        ConfigError: not override syntax, or a sweep without a finite list of values (`interval(...)`).
    """
    text = quote_home(text)
    ov = _hydra_override(text)
    if not ov.is_sweep_override():
        return _override(text, ov)
    if not ov.is_discrete_sweep():
        raise ConfigError(f"override '{text}': a multirun takes lists of values (a,b or range(...)); "
                          "interval(...) needs a search: declare it as `space:` in a sweep file")
    try:
        values = tuple(_special_floats(v) for v in ov.sweep_iterator())
    except Exception as e:  # noqa: BLE001 - glob(...) without choices, ...
        raise ConfigError(f"override '{text}': cannot list its values: {str(e).splitlines()[0]}") from None
    prefix = next((p for p in ("++", "+", "~") if text.startswith(p)), "")
    return Override(text, ov.key_or_group, list(values), prefix, ov.package, values)


def _override(text: str, ov: Any) -> Override:
    prefix = next((p for p in ("++", "+", "~") if text.startswith(p)), "")
    value = None if ov.is_delete() and ov.value() is None else _special_floats(ov.value())
    return Override(text, ov.key_or_group, value, prefix, ov.package)


def parse_value(text: str) -> Any:
    """`text` read as the value of an override (number, bool, null, list, ...), else the text itself."""
    try:
        (ov,) = _parser().parse_overrides([f"k={text}"])
    except Exception:  # noqa: BLE001 - not override syntax (e.g. spaces): it stays a string
        return text
    if ov.is_sweep_override():  # `a,b` is a sweep on the command line; here it is the text
        return text
    return _special_floats(ov.value())


def _parses_as(text: str) -> Any:
    """What the grammar reads for an unquoted value; None when it cannot read it (then it gets quoted)."""
    try:
        (ov,) = _parser().parse_overrides([f"k={text}"])
    except Exception:  # noqa: BLE001 - not parseable unquoted: quote it
        return None
    return None if ov.is_sweep_override() else _special_floats(ov.value())


def _special_floats(value: Any) -> Any:
    if isinstance(value, str):
        return _YAML_FLOATS.get(value.lower(), value)
    if isinstance(value, list):
        return [_special_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _special_floats(v) for k, v in value.items()}
    return value


def format_value(value: Any) -> str:
    """A JSON-like value in the override syntax (it parses back to the same value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "\\" in value or "${" in value:
            raise ConfigError(f"value {value!r}: backslashes and ${{...}} cannot be passed as an override")
        if _BARE_RE.match(value) and _parses_as(value) == value:  # paths and names stay readable
            return value
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"value {value!r} of type {type(value).__name__} cannot be passed as an override")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys (`{"optim": {"lr": 1}}` -> `{"optim.lr": 1}`); empty mappings stay."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# Settings that do not change a run's numbers: where and how it reports, where its data files are, and how
# its steps are grouped (trainer.chunk_steps: bit-identical, tests/test_chunks.py). A resumed checkpoint or
# sweep study may differ in them, and a multirun study's name leaves them out.
NEUTRAL_KEYS = ("out_dir", "results_dir", "logger", "trainer.progress_bar", "data.root", "data.download",
                "trainer.checkpoint", "trainer.ckpt_path", "trainer.profiler", "trainer.chunk_steps",
                # picks the compute settings under fast_path=auto; the settings that ran are in the config
                "trainer.fast_path_margin")


def under(key: str, prefixes: tuple[str, ...] = NEUTRAL_KEYS) -> bool:
    """Whether dotted `key` is one of `prefixes` or inside one (`logger.group` is under `logger`)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


# Run-config keys added since records and checkpoints were written without them, with the value their absence
# meant (the run did what this value does): an older record resumes, or compares, as that value.
ADDED_KEYS: dict[str, Any] = {"optim.warmup_steps": 0, "trainer.channels_last": False, "trainer.fast_path": "off"}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every flattened key whose value differs, sorted by key (a key of
    ADDED_KEYS that a config lacks counts as its value there)."""
    a, b = {**ADDED_KEYS, **flatten(old)}, {**ADDED_KEYS, **flatten(new)}
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
