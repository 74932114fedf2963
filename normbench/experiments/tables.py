"""A study's tables: `tables:` entries of experiments/<study>.yaml -> results/<study>/<name>.md and .tex.

Each entry names its part and caption and takes the options of `normbench.report.tables` (layout, metric,
columns, compare, rows, cols, value, ...); `references: [name]` adds the study's published numbers
(`references:` at the top of the file) as rows beside ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normbench.errors import ConfigError
from normbench.report.study import SweepResults
from normbench.report.tables import TABLE_OPTIONS, Table, build_table

OWN_KEYS = ("name", "part", "caption")


def check_table(exp: Any, raw: Any, index: int) -> dict[str, Any]:
    """Validates one `tables:` entry at load time (its options are checked again when built)."""
    where = f"study {exp.name}: tables[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with {', '.join(OWN_KEYS)} and table options")
    accepted = (*OWN_KEYS, *TABLE_OPTIONS)
    for k in raw:
        if k not in accepted:
            raise ConfigError(f"{where} has unknown key '{k}'; accepted: {', '.join(accepted)}")
    name = raw.get("name", "table" if index == 0 else None)
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ConfigError(f"{where} needs a name (letters, digits, '_'), got {name!r}")
    part = raw.get("part")
    if part not in exp.parts:
        raise ConfigError(f"{where} ('{name}'): part {part!r} is not declared; parts: {', '.join(exp.parts)}")
    for ref in raw.get("references") or []:
        if ref not in exp.references:
            raise ConfigError(f"{where} ('{name}'): unknown reference '{ref}'; declared: "
                              f"{', '.join(exp.references) or '(none)'}")
    return {**dict(raw), "name": name}


def build_study_table(exp: Any, entry: dict[str, Any], results: SweepResults) -> Table:
    options = {**TABLE_OPTIONS, **{k: v for k, v in entry.items() if k not in ("name", "part")}}
    options["references"] = [exp.references[r] for r in entry.get("references") or []]
    try:
        return build_table(results, options)
    except ConfigError as e:
        raise ConfigError(f"study {exp.name}: table '{entry['name']}': {e}") from None
