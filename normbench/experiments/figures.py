"""A study's figures: `figures:` entries -> results/<study>/figures/<name>.png, .pdf and .json (the data).

Each entry names its part, a kind of `normbench.report.figures` (metric_vs_x, epoch_curves, horizon,
dot_plot), a caption (shown under the figure in the README) and the kind's options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normbench.errors import ConfigError
from normbench.report.study import SweepResults

OWN_KEYS = ("name", "part", "kind", "caption", "title")


def check_figure(exp: Any, raw: Any, index: int) -> dict[str, Any]:
    from normbench.report.figures import KINDS

    where = f"study {exp.name}: figures[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with {', '.join(OWN_KEYS)} and the kind's options")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not accepted; accepted: {', '.join(KINDS)}")
    accepted = (*OWN_KEYS, *KINDS[kind][1])
    for k in raw:
        if k not in accepted:
            raise ConfigError(f"{where} ({kind}) has unknown key '{k}'; accepted: {', '.join(accepted)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ConfigError(f"{where} needs a name (letters, digits, '_'), got {name!r}")
    if raw.get("part") not in exp.parts:
        raise ConfigError(f"{where} ('{name}'): part {raw.get('part')!r} is not declared; "
                          f"parts: {', '.join(exp.parts)}")
    if not isinstance(raw.get("caption"), str):
        raise ConfigError(f"{where} ('{name}') needs a caption")
    return dict(raw)


def build_study_figure(exp: Any, entry: dict[str, Any], results: SweepResults):
    from normbench.report.figures import KINDS

    fn, _ = KINDS[entry["kind"]]
    options = {k: v for k, v in entry.items() if k not in OWN_KEYS}
    return fn(results, entry["name"], entry.get("title", ""), **options)
