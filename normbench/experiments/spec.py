"""experiments/<study>.yaml -> a validated `Experiment`.

    title: Group Normalization vs BatchNorm across the batch per worker
    question: Does BN's error grow as the batch per worker shrinks while GN's stays flat?
    protocol: why these choices (data, model, epochs, seeds, learning rates)
    declared: 2026-11-30                 # the claims were written on this date, before any run
    parts:                               # the sweeps the study runs: sweep-file mappings (configs/sweep/)
      paper: {base: {...}, grid: {...}, seeds: 5, lr_scaling: {base_batch_size: 256}}
      # a part may tune its nuisance hyperparameters per arm: `tuning: {space, trials, ...}`
      # (normbench.experiments.tuning)
    tables:                              # results/<study>/<name>.md and .tex
      - {name: table, part: paper, caption: ..., layout: pivot, rows: norm, cols: data.batch_size, ...}
    figures:                             # results/<study>/figures/<name>.png|pdf (+ <name>.json, the data)
      - {name: error_vs_batch, part: paper, kind: metric_vs_x, caption: ..., x: data.batch_size, ...}
    claims:                              # checked by normbench.experiments.claims
      - {id: bn_degrades, statement: ..., test: {kind: difference, part: paper, metric: test_error, ...}}
    references:                          # published numbers shown beside ours (not claims)
      d2l: {label: "d2l (GPU)", source: ..., values: {bn: {test_acc: 0.869}}}
    scales:                              # named variants: overrides on every part's base, other seeds
      smoke: {description: ..., base: {data: synthetic, ...}, seeds: [0, 1]}
      full: {description: ..., base: {...}, gpu_hours: 6}

The canonical results (committed) are those of scale `cpu`: the file's own settings. Every problem is one
ConfigError line that names the study and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.experiments.protocols import fixed_optimizer_batch

STUDY_KEYS = ("title", "question", "protocol", "declared", "parts", "tables", "figures", "claims", "references",
              "scales", "alpha")
REQUIRED = ("title", "question", "protocol", "declared", "parts")
CANONICAL_SCALE = "cpu"
SCALE_KEYS = ("description", "base", "seeds", "gpu_hours")
# Smoke runs (tests, a first try on a new machine): tiny synthetic data, one epoch, two seeds.
DEFAULT_SMOKE = {
    "description": "tiny synthetic data, one epoch, two seeds: checks the machinery, not the claims",
    "base": {"data": "synthetic", "data.num_train": 1024, "data.num_test": 128, "trainer.max_epochs": 1,
             "calib.samples": 128, "trainer.accelerator": "cpu"},
    "seeds": [0, 1],
}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class Experiment:
    """A validated study declaration, with its parts' sweep specs built for one scale."""

    name: str
    path: Path
    scale: str
    title: str
    question: str
    protocol: str
    declared: str
    parts: dict[str, Any]  # part name -> SweepSpec
    raw_parts: dict[str, dict[str, Any]]
    tables: list[dict[str, Any]] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    references: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    alpha: float = 0.05  # the family-wise error rate of the claims (Holm, normbench.experiments.familywise)
    tuning: dict[str, Any] = field(default_factory=dict)  # part -> its per-arm tuning (experiments.tuning.Tuning)

    @property
    def results_name(self) -> str:
        """The folder under results/: the study's name, suffixed with the scale unless it is canonical."""
        return self.name if self.scale == CANONICAL_SCALE else f"{self.name}-{self.scale}"

    def sweep_name(self, part: str) -> str:
        """The Optuna study (and work folder) name of a part."""
        return f"{self.results_name}-{part}"

    def trials_planned(self) -> int:
        tuning = sum(t.trials * len(t.seeds) * max(1, _grid_size(self.parts[p])) for p, t in self.tuning.items())
        return tuning + sum(len(s.seeds) * max(1, _grid_size(s)) for s in self.parts.values())


def _grid_size(spec: Any) -> int:
    n = 1
    for d in spec.grid:
        n *= len(d.values)
    return n


def repo_root() -> Path:
    """The folder holding experiments/ and results/: NORMBENCH_ROOT, else the source checkout, else the cwd."""
    env = os.environ.get("NORMBENCH_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    return here if (here / "experiments").is_dir() else Path.cwd()


def experiments_dir() -> Path:
    return repo_root() / "experiments"


def available() -> list[str]:
    folder = experiments_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _fail(study: str, msg: str) -> ConfigError:
    return ConfigError(f"study {study}: {msg}")


def _text(study: str, raw: Mapping, key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(study, f"'{key}' must be a non-empty text, got {value!r}")
    return " ".join(value.split()) if key != "protocol" else value.strip()


def load_experiment(name: str, scale: str = CANONICAL_SCALE) -> Experiment:
    """Reads and validates experiments/<name>.yaml for `scale` (cpu: the file's own settings)."""
    from omegaconf import OmegaConf

    names = available()
    if name not in names:
        raise ConfigError(f"unknown study '{name}'; accepted: {', '.join(names) or '(none)'}")
    path = experiments_dir() / f"{name}.yaml"
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # noqa: BLE001 - YAML and interpolation errors come in many classes
        raise _fail(name, f"cannot read {path}: {' '.join(str(e).split())}") from None
    return parse_experiment(name, raw, path, scale)


def parse_experiment(name: str, raw: Any, path: Path, scale: str = CANONICAL_SCALE) -> Experiment:
    """Validates a study mapping (see the module docstring); every problem is one ConfigError line."""
    from normbench.experiments.claims import check_claim
    from normbench.experiments.figures import check_figure
    from normbench.experiments.protocols import check_contrasts
    from normbench.experiments.tables import check_table

    if not _NAME_RE.match(name):
        raise ConfigError(f"study name '{name}' must be lower-case letters, digits and '_'")
    if not isinstance(raw, Mapping):
        raise _fail(name, f"the file must hold a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in STUDY_KEYS:
            raise _fail(name, f"unknown key '{key}'; accepted: {', '.join(STUDY_KEYS)}")
    for key in REQUIRED:
        if key not in raw:
            raise _fail(name, f"'{key}' is missing; a study declares {', '.join(REQUIRED)}")
    declared = str(raw["declared"])
    try:
        date.fromisoformat(declared)
    except ValueError:
        raise _fail(name, f"'declared' must be a date YYYY-MM-DD, got {declared!r}") from None
    scales = _scales(name, raw.get("scales"))
    if scale not in scales:
        raise _fail(name, f"unknown scale '{scale}'; accepted: {', '.join(scales)}")
    raw_parts = raw["parts"]
    if not isinstance(raw_parts, Mapping) or not raw_parts:
        raise _fail(name, "'parts' must map part names to sweep mappings (configs/sweep/ syntax)")
    exp = Experiment(name=name, path=path, scale=scale, title=_text(name, raw, "title"),
                     question=_text(name, raw, "question"), protocol=_text(name, raw, "protocol"),
                     declared=declared, parts={}, raw_parts={}, scales=scales)
    for part, sweep in raw_parts.items():
        if not isinstance(part, str) or not _NAME_RE.match(part):
            raise _fail(name, f"part name {part!r} must be lower-case letters, digits and '_'")
        exp.raw_parts[part] = _part_mapping(name, part, sweep)
        if "tuning" in exp.raw_parts[part]:
            exp.tuning[part] = _part_tuning(name, part, exp.raw_parts[part])
        exp.parts[part] = _part_spec(exp, part, exp.raw_parts[part], scales[scale])
    exp.references = _mapping(name, "references", raw.get("references"))
    exp.tables = [check_table(exp, t, i) for i, t in enumerate(_list(name, "tables", raw.get("tables")))]
    exp.figures = [check_figure(exp, f, i) for i, f in enumerate(_list(name, "figures", raw.get("figures")))]
    exp.claims = [check_claim(exp, c, i) for i, c in enumerate(_list(name, "claims", raw.get("claims")))]
    _unique(name, "tables", [t["name"] for t in exp.tables])
    _unique(name, "figures", [f["name"] for f in exp.figures])
    _unique(name, "claims", [c["id"] for c in exp.claims])
    alpha = raw.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise _fail(name, f"'alpha' (the claims' family-wise error rate) must be in (0, 1), got {alpha!r}")
    exp.alpha = float(alpha)
    check_contrasts(exp)  # one factor at a time, or a declared confound
    return exp


def _list(study: str, key: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(study, f"'{key}' must be a list, got {type(value).__name__}")
    return value


def _mapping(study: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(study, f"'{key}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def _unique(study: str, what: str, names: list[str]) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise _fail(study, f"{what}: '{n}' is declared twice")
        seen.add(n)


def _scales(study: str, raw: Any) -> dict[str, dict[str, Any]]:
    scales: dict[str, dict[str, Any]] = {CANONICAL_SCALE: {"description": "the committed results", "base": {},
                                                           "seeds": None, "gpu_hours": None},
                                         "smoke": {**DEFAULT_SMOKE, "gpu_hours": None}}
    for scale, body in _mapping(study, "scales", raw).items():
        if scale == CANONICAL_SCALE:
            raise _fail(study, f"scale '{CANONICAL_SCALE}' is the file's own settings; it cannot be redefined")
        if not isinstance(body, Mapping):
            raise _fail(study, f"scale '{scale}' must be a mapping with {', '.join(SCALE_KEYS)}")
        unknown = [k for k in body if k not in SCALE_KEYS]
        if unknown:
            raise _fail(study, f"scale '{scale}' has unknown key '{unknown[0]}'; accepted: {', '.join(SCALE_KEYS)}")
        base = _mapping(study, f"scales.{scale}.base", body.get("base"))
        gpu_hours = body.get("gpu_hours")
        if gpu_hours is not None and (isinstance(gpu_hours, bool) or not isinstance(gpu_hours, (int, float))
                                      or gpu_hours <= 0):
            raise _fail(study, f"scales.{scale}.gpu_hours must be a positive number, got {gpu_hours!r}")
        scales[str(scale)] = {"description": str(body.get("description") or ""), "base": base,
                              "seeds": body.get("seeds"), "gpu_hours": gpu_hours}
    return scales


def _part_mapping(study: str, part: str, sweep: Any) -> dict[str, Any]:
    if not isinstance(sweep, Mapping):
        raise _fail(study, f"part '{part}' must be a sweep mapping (configs/sweep/ syntax), got {sweep!r}")
    sweep = fixed_optimizer_batch(study, part, dict(sweep))
    if sweep.get("sampler", "grid") != "grid":
        raise _fail(study, f"part '{part}': a study runs grids (every point exactly once); got sampler "
                           f"{sweep['sampler']!r}")
    for key in ("storage", "n_workers", "max_trials"):
        if key in sweep:
            raise _fail(study, f"part '{part}': '{key}' is a run setting (reproduce sweep.{key}=...), not part "
                               "of a study's protocol")
    sweep.setdefault("objective", "test_acc")  # a grid's objective drives nothing; the test set is fine
    return sweep


def _part_tuning(study: str, part: str, sweep: dict[str, Any]) -> Any:
    """Takes the part's `tuning:` block out of its sweep mapping (normbench.experiments.tuning); the validation
    split it needs goes into the part's base, so the final runs train on the same samples as the tuning."""
    from normbench.experiments.tuning import parse_tuning

    base = dict(sweep.get("base") or {})
    tuning, val_fraction = parse_tuning(study, part, sweep.pop("tuning"), base, sweep.get("grid"))
    if val_fraction is not None:
        sweep["base"] = {**base, "data.val_fraction": val_fraction}
    return tuning


def _part_spec(exp: Experiment, part: str, sweep: dict[str, Any], scale: dict[str, Any]) -> Any:
    from normbench.sweep.spec import parse_spec

    raw = dict(sweep)
    raw["base"] = {**(raw.get("base") or {}), **scale["base"]}
    if scale["seeds"] is not None:
        raw["seeds"] = scale["seeds"]
    try:
        return parse_spec(exp.sweep_name(part), raw, str(exp.path))
    except ConfigError as e:
        raise _fail(exp.name, f"part '{part}': {e}") from None
