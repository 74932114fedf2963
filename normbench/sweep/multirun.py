"""`python -m normbench run -m norm=bn,gn data.batch_size=8,32`: Hydra's multirun as an ad-hoc grid study.

Each override with several values (`a,b`, `range(2,5)`) becomes a grid dimension (`seed=0,1,2` the seeds);
the other overrides are the base of every trial, and `sweep.<key>=...` sets the study as for a sweep file
(`sweep.n_workers=2`, `sweep.max_trials=4`, `sweep.storage=...`, `sweep.study_name=...`). It then runs
through the sweep machinery like any sweep file: every cell exactly once (also with many workers), resumed
by the same command, `<results_dir>/<study>/trials.csv`, and the report commands on `sweep=<study>`.

The study is named after the command: `multirun-<swept keys>-<hash>`, the hash taken over the grid, the
seeds and the base overrides (sorted; output settings such as results_dir, logger, data.root left out), so
the same command resumes the same study, and a changed one (another epoch count) starts its own instead
of being refused. Its objective is `test_acc` (a grid decides nothing on it; `sweep.objective=val_acc`
with `data.val_fraction` > 0 names another).
"""

from __future__ import annotations

from typing import Any

from normbench.errors import ConfigError
from normbench.overrides import parse, parse_multirun, under
from normbench.sweep.plan import stable_hash
from normbench.sweep.spec import SPEC_KEYS, SweepSpec, parse_spec

FLAGS = ("-m", "--multirun")
PREFIX = "multirun"
DEFAULT_OBJECTIVE = "test_acc"


def take_flag(args: list[str]) -> tuple[bool, list[str]]:
    """(whether `-m`/`--multirun` was given, the other arguments)."""
    rest = [a for a in args if a not in FLAGS]
    return len(rest) != len(args), rest


def study_name(grid: dict[str, list[Any]], seeds: list[Any] | None, base: list[str]) -> str:
    """`multirun-<swept keys>-<hash>`: stable for one command, whatever the order of its overrides."""
    kept = sorted(o for o in base if not under(o.lstrip("+~").split("=", 1)[0]))
    digest = stable_hash({"grid": sorted(grid.items()), "seeds": seeds, "base": kept}, 8)
    keys = "-".join(sorted(k.replace("/", ".") for k in grid)) or "runs"
    return f"{PREFIX}-{keys[:60]}-{digest}"


def multirun_spec(args: list[str]) -> tuple[SweepSpec, list[str]]:
    """The grid study of a `run -m` command line and the overrides every trial starts from.

    Raises:
        ConfigError: sweep=NAME given (a sweep file is run without -m), a key listed twice, an unknown
            `sweep.<key>`, or a value list the grid cannot take; one line naming it.
    """
    grid: dict[str, list[Any]] = {}
    seeds: list[Any] | None = None
    settings: dict[str, Any] = {}
    base: list[str] = []
    for text in args:
        head = text.lstrip("+").split("=", 1)[0]
        if head == "sweep":
            raise ConfigError("run -m builds a grid study from the command's value lists; a sweep file runs without "
                              f"-m: python -m normbench run {text}")
        if head.startswith("sweep."):
            key = head[len("sweep."):]
            if key not in SPEC_KEYS or key in ("grid", "space", "seeds", "base"):
                accepted = [k for k in SPEC_KEYS if k not in ("grid", "space", "seeds", "base")]
                raise ConfigError(f"unknown key '{head}' for run -m; accepted: "
                                  f"{', '.join('sweep.' + k for k in accepted)}")
            settings[key] = parse(text).value
            continue
        ov = parse_multirun(text)
        if ov.sweep is None:
            if ov.key == "seed":
                seeds = [ov.value]
            else:
                base.append(text)
            continue
        if ov.prefix == "~" or ov.package is not None:
            raise ConfigError(f"override '{text}': a multirun dimension is key=a,b (no ~ or @package)")
        if ov.key in grid or (ov.key == "seed" and seeds is not None):
            raise ConfigError(f"'{ov.key}' is given twice; list its values once (key=a,b)")
        if ov.key == "seed":
            seeds = list(ov.sweep)
        else:
            grid[ov.key] = list(ov.sweep)
    name = study_name(grid, seeds, base)
    raw: dict[str, Any] = {"description": "python -m normbench run -m " + " ".join(args), "grid": grid,
                           "seeds": seeds if seeds is not None else [0], "sampler": "grid",
                           "objective": DEFAULT_OBJECTIVE, "study_name": name, **settings}
    return parse_spec(name, raw), base
