"""Selecting a study's configurations by a claim's selector (`{norm: gn, data.batch_size: 2}`).

Shared by the claim checker (normbench.experiments.claims) and its family-wise tests
(normbench.experiments.familywise), which import it rather than each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normbench.report.study import ConfigGroup, SweepResults
from normbench.report.table_model import format_value


def matches(group: ConfigGroup, selector: Mapping[str, Any]) -> bool:
    """Whether a configuration has every selected value (the seed is never a selector)."""
    return all(format_value(group.values.get(k)) == format_value(v) for k, v in selector.items() if k != "seed")


def select(results: SweepResults, selector: Mapping[str, Any]) -> list[ConfigGroup]:
    """The configurations that match `selector`, in the study's order."""
    return [g for g in results.groups if matches(g, selector)]


def only(results: SweepResults, selector: Mapping[str, Any]) -> ConfigGroup | None:
    """The one configuration that matches `selector`; None when none or several do."""
    found = select(results, selector)
    return found[0] if len(found) == 1 else None
