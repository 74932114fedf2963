"""The same runs counted as two studies' evidence: detect committed records that are one training run.

Two records are the same run when they share the seed and their configs agree on every training key both
configs have: everything but the neutral keys (normbench.overrides.NEUTRAL_KEYS: where a run reports and
stores, how its steps are grouped) and the measurement section `calib` (what is measured after or beside
training, on a copy of the model: a precise-BN test every epoch does not change the trajectory). A key only
one config has is an option added after the other ran; it is skipped, so records of two code versions still
compare. Such a pair is one piece of evidence, not two: `reproduce --check` and `--plan` print a warning
naming both studies and the shared runs (with how many of them also report the same test accuracy).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normbench.overrides import NEUTRAL_KEYS, flatten, under

# Keys that do not decide a run's training trajectory: the neutral ones and the measurements.
NOT_TRAINING = (*NEUTRAL_KEYS, "calib", "seed")


def training_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config (nested) as the flat keys that decide its training trajectory."""
    return {k: v for k, v in flatten(dict(config)).items() if not under(k, NOT_TRAINING)}


def same_training(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two `training_config`s agree on every key both have (and share at least one)."""
    common = a.keys() & b.keys()
    return bool(common) and all(a[k] == b[k] for k in common)


@dataclass(frozen=True)
class Run:
    """One committed record: where it is, its seed, its training config and its test accuracy."""

    study: str
    part: str
    number: int
    seed: int
    config: dict[str, Any]
    test_acc: float | None
    summary: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def bucket(self) -> tuple[Any, ...]:
        c = self.config
        return (self.seed, c.get("norm.name"), c.get("model.name"), c.get("data.name"), c.get("data.batch_size"))


@dataclass
class Overlap:
    """Runs that two studies (parts) both hold."""

    a: tuple[str, str]
    b: tuple[str, str]
    pairs: list[tuple[Run, Run]] = field(default_factory=list)

    def warning(self) -> str:
        same_acc = sum(1 for x, y in self.pairs if x.test_acc is not None and x.test_acc == y.test_acc)
        nums_a = ", ".join(str(x.number) for x, _ in self.pairs)
        nums_b = ", ".join(str(y.number) for _, y in self.pairs)
        seeds = sorted({x.seed for x, _ in self.pairs})
        return (f"WARNING: the same {len(self.pairs)} run(s) are evidence of two studies: {self.a[0]} (part "
                f"{self.a[1]}, trials {nums_a}) and {self.b[0]} (part {self.b[1]}, trials {nums_b}); same training "
                f"config and seed (seeds {', '.join(map(str, seeds))}), identical test_acc in {same_acc} of "
                f"{len(self.pairs)}: count them once")


def committed_runs(results_dir: Path, studies: list[str] | None = None) -> list[Run]:
    """Every finished committed record under results_dir/<study>/records/*.jsonl (all studies by default)."""
    out = []
    for folder in sorted(results_dir.glob("*/records")):
        study = folder.parent.name
        if studies is not None and study not in studies:
            continue
        for path in sorted(folder.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                summary = row.get("summary")
                if row.get("state") != "COMPLETE" or not isinstance(summary, dict) or "config" not in summary:
                    continue
                seed = summary["config"].get("seed", (row.get("params") or {}).get("seed"))
                out.append(Run(study, path.stem, int(row["number"]), int(seed), training_config(summary["config"]),
                               summary.get("test_acc"), summary))
    return out


def find_overlaps(runs: list[Run], study: str | None = None) -> list[Overlap]:
    """Pairs of runs of two different studies that are the same run (only pairs involving `study` if given)."""
    buckets: dict[tuple[Any, ...], list[Run]] = defaultdict(list)
    for r in runs:
        buckets[r.bucket()].append(r)
    found: dict[tuple[tuple[str, str], tuple[str, str]], Overlap] = {}
    for group in buckets.values():
        for i, x in enumerate(group):
            for y in group[i + 1:]:
                if x.study == y.study or (study is not None and study not in (x.study, y.study)):
                    continue
                if not same_training(x.config, y.config):
                    continue
                if (x.study, x.part) > (y.study, y.part):
                    x, y = y, x
                key = ((x.study, x.part), (y.study, y.part))
                found.setdefault(key, Overlap(*key)).pairs.append((x, y))
    for o in found.values():
        o.pairs.sort(key=lambda p: (p[0].number, p[1].number))
    return [found[k] for k in sorted(found)]


def overlap_warnings(results_dir: Path, study: str) -> list[str]:
    """The warnings for `study`'s committed runs that another committed study also holds."""
    return [o.warning() for o in find_overlaps(committed_runs(results_dir), study)]
