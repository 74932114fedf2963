"""Fields a sweep adds to a trial's run record that the run itself cannot know (e.g. what tuning chose)."""

from __future__ import annotations

import copy
from typing import Any

from normbench.training.history import RecordPart


class FixedFields(RecordPart):
    """Adds `fields` (each declared in normbench.record) to the run record as they are."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = copy.deepcopy(fields)

    def summary(self) -> dict[str, Any]:
        return copy.deepcopy(self.fields)
