"""Sweep files (configs/sweep/<name>.yaml) -> a validated `SweepSpec`.

A sweep file declares which config keys vary and how; everything else comes from the run config
(configs/config.yaml, the file's `base` mapping, then the command line's overrides):

    description: BN vs GN across batch sizes
    base:                          # fixed for every trial (group choices and dotted keys)
      data: fashion_mnist
      data.val_fraction: 0.1
    grid:                          # every combination, each exactly once
      norm: [bn, gn]               # `all` = every registered name of a registry group
      data.batch_size: [2, 4, 8]
      micro_batch:                 # a linked dimension: each value sets several keys together
        - {data.batch_size: 64, trainer.accumulate_grad_batches: 4}
    space:                         # distributions for sampler: tpe | random
      optim.lr: {type: float, low: 0.05, high: 2.0, log: true}
      data.batch_size: {type: categorical, choices: [16, 32, 64]}
    seeds: [0, 1, 2]               # a grid dimension: every configuration gets every seed
    sampler: grid                  # grid | tpe | random | qmc (scrambled Sobol: lead k is the sequence's point k)
    n_configs: 40                  # tpe/random/qmc: sampled configurations (each kept one runs every seed)
    objective: val_acc             # a summary.json field; direction: maximize | minimize
    pruner: none                   # none | median | successive_halving | hyperband (+ pruner_options)
    lr_scaling: {base_batch_size: 256}   # optional linear scaling rule for optim.lr

`table:` and `report:` mappings are kept as they are for the report commands. Every top-level key
can be overridden on the command line as `sweep.<key>=<value>` (e.g. `sweep.n_workers=4`).
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from normbench import schema
from normbench.errors import ConfigError
from normbench.overrides import parse
from normbench.results import check_study_name
from normbench.schema import option

DIST_TYPES = ("float", "int", "categorical")
ALL = "all"  # grid value meaning every registered name of a registry group (norm: all)

_KEY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_PRIMITIVES = (type(None), bool, int, float, str)

# Top-level keys of a sweep file and what they hold (the error for an unknown key lists them).
SPEC_KEYS = ("description", "base", "grid", "space", "seeds", "sampler", "sampler_options", "sampler_seed",
             "n_configs", "objective", "direction", "pruner", "pruner_options", "lr_scaling", "study_name",
             "storage", "n_workers", "trials_per_device", "max_trials", "heartbeat_interval", "grace_period",
             "storage_patience", "table", "report")


class _Unset:
    """A linked value that does not set one of its dimension's keys (e.g. gn beside bn's momentum)."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


@dataclass(frozen=True)
class Dimension:
    """One grid dimension: a config key with its values, or a linked set of keys set together.

    The values of a linked dimension may set different keys (`{norm: bn, norm.momentum: 0.01}` beside
    `{norm: gn}`): `keys` is their union and a value leaves the keys it does not name at UNSET.
    """

    label: str
    keys: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # one tuple per value, aligned with `keys`

    def assignments(self) -> list[dict[str, Any]]:
        return [{k: x for k, x in zip(self.keys, v, strict=True) if x is not UNSET} for v in self.values]


@dataclass(frozen=True)
class SpaceDim:
    """One searched key: its distribution as written (type, low, high, log, step, choices)."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self):
        """The Optuna distribution for this key."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log,
                                 step=None if self.step is None else float(self.step))

    def probe_values(self) -> list[Any]:
        """Values that validation composes: the bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None  # a numeric dimension has both bounds
        if self.type == "float":
            return [float(self.low), float(self.high)]
        return [int(self.low), int(self.high)]


@dataclass
class SweepSettings:
    """The plain settings of a sweep file (also `sweep.<key>=...` on the command line), declared once and checked
    by the run config's schema mechanism (normbench.schema): type, range, default, one-line errors. The
    structured parts (base, grid, space, seeds, the Optuna options, lr_scaling, storage, table, report) have
    their own parsers below."""

    description: str | None = None
    # The Optuna study and the folder `<results_dir>/<study>/` (null: the sweep's name; see `SweepSpec.study`)
    study_name: str | None = None
    sampler: Literal["grid", "tpe", "random", "qmc"] = "grid"
    sampler_seed: int = option(0, low=0)
    n_configs: int | None = option(None, low=1)
    objective: str = "val_acc"
    direction: Literal["maximize", "minimize"] = "maximize"
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    n_workers: int = option(1, low=1)
    # GPUs: worker k runs on CUDA device (k // trials_per_device) (one small trial cannot fill a GPU);
    # null: every worker sees every device. No effect on a machine without CUDA.
    trials_per_device: int | None = option(None, low=1)
    max_trials: int | None = option(None, low=1)
    heartbeat_interval: int = option(10, low=1)
    grace_period: int | None = option(None, low=1)
    storage_patience: int = option(300, low=1)  # seconds a storage operation keeps retrying through an outage


SETTING_KEYS = tuple(schema.keys(SweepSettings))


@dataclass(kw_only=True)
class SweepSpec(SweepSettings):
    """A validated sweep file (plus `sweep.<key>=...` overrides from the command line)."""

    name: str
    path: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: list[Dimension] = field(default_factory=list)
    space: list[SpaceDim] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    sampler_options: dict[str, Any] = field(default_factory=dict)
    pruner_options: dict[str, Any] = field(default_factory=dict)
    lr_scaling: dict[str, Any] | None = None
    storage: str | None = None
    table: dict[str, Any] | None = None
    report: dict[str, Any] | None = None

    @property
    def study(self) -> str:
        """The study's name: its Optuna study in the storage and its folder under results_dir."""
        return self.study_name or self.name

    @property
    def is_grid(self) -> bool:
        return self.sampler == "grid"

    @property
    def swept_keys(self) -> list[str]:
        """Config keys the sweep sets per trial, in declaration order (seed last)."""
        keys = [k for d in self.grid for k in d.keys] + [s.key for s in self.space]
        return [*keys, "seed"]

    def grid_combinations(self) -> list[dict[str, Any]]:
        """Every grid combination without the seed (what validation composes)."""
        return [dict(itertools.chain.from_iterable(a.items() for a in parts))
                for parts in itertools.product(*(d.assignments() for d in self.grid))]

    def effective_grace_period(self) -> int:
        return self.grace_period if self.grace_period is not None else 6 * self.heartbeat_interval

    def to_record(self) -> dict[str, Any]:
        """A JSON-able description stored with the study (the report commands read `table`/`report`)."""
        out = asdict(self)
        out["grid"] = {d.label: [a if len(d.keys) > 1 else a[d.keys[0]] for a in d.assignments()]
                       for d in self.grid}
        out["space"] = {s.key: {k: v for k, v in asdict(s).items() if k != "key" and v not in (None, (), False)}
                        for s in self.space}
        for s in out["space"].values():
            if "choices" in s:
                s["choices"] = list(s["choices"])
        if self.storage:  # a password in the URL is for connecting only, never stored
            from normbench.results import display_url

            out["storage"] = display_url(self.storage)
        return out


def _fail(sweep: str, msg: str) -> ConfigError:
    return ConfigError(f"sweep {sweep}: {msg}")


def _check_key(sweep: str, key: Any, where: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise _fail(sweep, f"{where} key {key!r} is not a config key (e.g. norm, data.batch_size, norm.momentum)")
    if key == "seed":
        raise _fail(sweep, f"{where} cannot set 'seed'; list the seeds under `seeds:` (a grid dimension)")
    return key


def _check_primitive(sweep: str, value: Any, where: str) -> Any:
    if not isinstance(value, _PRIMITIVES):
        raise _fail(sweep, f"{where} value {value!r} must be a number, string, boolean or null")
    return value


def _expand_all(key: str) -> list[str] | None:
    """`norm: all` -> every registered norm (only for registry-backed config groups)."""
    from normbench.config import SECTIONS

    section = SECTIONS.get(key)
    if section is None or section.registry is None or not section.group:
        return None
    return section.registry.names()


def _parse_grid(sweep: str, grid: Any) -> list[Dimension]:
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise _fail(sweep, f"grid must be a mapping of config key -> list of values, got {grid!r}")
    dims = []
    for label, values in grid.items():
        if values == ALL:
            expanded = _expand_all(str(label))
            if expanded is None:
                raise _fail(sweep, f"grid '{label}': '{ALL}' only works for a registry group (model, norm, data)")
            values = expanded
        if not isinstance(values, list):
            raise _fail(sweep, f"grid '{label}' must be a list of values, got {values!r}")
        if not values:
            raise _fail(sweep, f"grid '{label}' has an empty list of values")
        if all(isinstance(v, Mapping) for v in values):  # linked dimension
            if any(not v for v in values):
                raise _fail(sweep, f"grid '{label}': a linked value must set at least one key")
            keys = tuple(dict.fromkeys(k for v in values for k in v))  # the union, in order of appearance
            for k in keys:
                _check_key(sweep, k, f"grid '{label}'")
            rows = tuple(tuple(_check_primitive(sweep, v[k], f"grid '{label}'") if k in v else UNSET for k in keys)
                         for v in values)
            dims.append(Dimension(str(label), keys, rows))
        else:
            key = _check_key(sweep, label, "grid")
            rows = tuple((_check_primitive(sweep, v, f"grid '{key}'"),) for v in values)
            dims.append(Dimension(key, (key,), rows))
    for d in dims:
        if len(set(d.values)) != len(d.values):
            dup = next(v for v in d.values if d.values.count(v) > 1)
            raise _fail(sweep, f"grid '{d.label}' lists {dup if len(dup) > 1 else dup[0]!r} twice")
    return dims


_DIST_KEYS = {"float": ("type", "low", "high", "log", "step"), "int": ("type", "low", "high", "log", "step"),
              "categorical": ("type", "choices")}


def _parse_space(sweep: str, space: Any) -> list[SpaceDim]:
    if space is None:
        return []
    if not isinstance(space, Mapping):
        raise _fail(sweep, f"space must be a mapping of config key -> distribution, got {space!r}")
    out = []
    for key, dist in space.items():
        _check_key(sweep, key, "space")
        where = f"space '{key}'"
        if isinstance(dist, list):  # shorthand: a list is a categorical distribution
            dist = {"type": "categorical", "choices": dist}
        if not isinstance(dist, Mapping):
            raise _fail(sweep, f"{where} must be a distribution like {{type: float, low: 0.01, high: 1.0, log: true}} "
                               f"or {{type: categorical, choices: [...]}}, got {dist!r}")
        kind = dist.get("type")
        if kind not in DIST_TYPES:
            raise _fail(sweep, f"{where} has type {kind!r}; accepted: {', '.join(DIST_TYPES)}")
        unknown = [k for k in dist if k not in _DIST_KEYS[kind]]
        if unknown:
            raise _fail(sweep, f"{where} ({kind}) has unknown field '{unknown[0]}'; accepted: "
                               f"{', '.join(_DIST_KEYS[kind])}")
        if kind == "categorical":
            choices = dist.get("choices")
            if not isinstance(choices, list) or not choices:
                raise _fail(sweep, f"{where} needs a non-empty list of choices")
            for c in choices:
                _check_primitive(sweep, c, where)
            if len(set(map(repr, choices))) != len(choices):
                raise _fail(sweep, f"{where} lists a choice twice: {choices}")
            out.append(SpaceDim(key, kind, choices=tuple(choices)))
            continue
        low, high, log, step = dist.get("low"), dist.get("high"), dist.get("log", False), dist.get("step")
        number = int if kind == "int" else (int, float)
        for name, v in (("low", low), ("high", high)):
            if not isinstance(v, number) or isinstance(v, bool):
                what = "an integer" if kind == "int" else "a number"
                raise _fail(sweep, f"{where} needs {name} as {what}, got {v!r}")
        assert low is not None and high is not None  # numbers (checked above)
        if not low < high:
            raise _fail(sweep, f"{where} needs low < high, got low={low}, high={high}")
        if not isinstance(log, bool):
            raise _fail(sweep, f"{where}: log must be true or false, got {log!r}")
        if log and low <= 0:
            raise _fail(sweep, f"{where}: a log distribution needs low > 0, got low={low}")
        if step is not None:
            if log:
                raise _fail(sweep, f"{where}: step and log cannot be combined")
            if not isinstance(step, number) or isinstance(step, bool) or step <= 0:
                raise _fail(sweep, f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'}, "
                                   f"got {step!r}")
        out.append(SpaceDim(key, kind, low, high, log, step))
    return out


def _parse_seeds(sweep: str, seeds: Any) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise _fail(sweep, f"seeds: a count must be >= 1, got {seeds}")
        return list(range(seeds))
    if not isinstance(seeds, list) or not seeds:
        raise _fail(sweep, f"seeds must be a non-empty list of integers (or a count), got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise _fail(sweep, f"seeds must be non-negative integers, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail(sweep, f"seeds lists a seed twice: {seeds}")
    return list(seeds)


def _check_options(sweep: str, what: str, options: Any, cls: type[Any] | None) -> dict[str, Any]:
    """`sampler_options`/`pruner_options`: keyword arguments of the Optuna class, checked by its signature."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise _fail(sweep, f"{what} must be a mapping, got {options!r}")
    if cls is None:
        if options:
            raise _fail(sweep, f"{what} given but there is nothing to configure")
        return {}
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "seed")]
    for k in options:
        if k not in params:
            raise _fail(sweep, f"{what} has unknown option '{k}' for {cls.__name__}; accepted: {', '.join(params)}")
    return dict(options)


def sampler_class(name: str):
    import optuna

    return {"grid": None, "tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "qmc": optuna.samplers.QMCSampler}[name]


def pruner_class(name: str):
    import optuna

    return {"none": None, "median": optuna.pruners.MedianPruner,
            "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
            "hyperband": optuna.pruners.HyperbandPruner}[name]


@overload
def _int(sweep: str, key: str, value: Any, minimum: int, allow_none: Literal[False] = False) -> int: ...
@overload
def _int(sweep: str, key: str, value: Any, minimum: int, allow_none: bool) -> int | None: ...
def _int(sweep: str, key: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(sweep, f"{key} must be an integer >= {minimum}{' or null' if allow_none else ''}, got {value!r}")
    return value


def _mapping(sweep: str, key: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(sweep, f"{key} must be a mapping, got {value!r}")
    return dict(value)


def parse_spec(name: str, raw: Any, path: str = "") -> SweepSpec:
    """Validates the mapping of a sweep file; every problem is one ConfigError line naming the key."""
    if not isinstance(raw, Mapping):
        raise _fail(name, f"the file must hold a mapping of settings, got {type(raw).__name__}")
    for key in raw:
        if key not in SPEC_KEYS:
            raise _fail(name, f"unknown key '{key}'; accepted: {', '.join(SPEC_KEYS)}")
    given = {k: v for k, v in raw.items() if k in SETTING_KEYS}
    if "pruner" in given:  # `pruner: null` and `Median` as in the YAML files written so far
        given["pruner"] = str(given["pruner"]).lower() if given["pruner"] is not None else "none"
    try:
        settings = schema.check(given, SweepSettings)
    except ConfigError as e:
        raise _fail(name, str(e)) from None
    spec = SweepSpec(name=name, path=path, **settings)
    if spec.study_name is not None:
        check_study_name(spec.study_name, f"sweep {name}: study_name")
    if not spec.objective:
        raise _fail(name, "objective must be the name of a summary.json field (e.g. val_acc), got ''")
    base = _mapping(name, "base", raw.get("base")) or {}
    for k in base:
        if not isinstance(k, str) or not _KEY_RE.match(k):
            raise _fail(name, f"base key {k!r} is not a config key")
        if k == "seed":
            raise _fail(name, "base cannot set 'seed'; list the seeds under `seeds:`")
    spec.base = base
    spec.grid = _parse_grid(name, raw.get("grid"))
    spec.space = _parse_space(name, raw.get("space"))
    spec.seeds = _parse_seeds(name, raw.get("seeds", [0]))
    spec.sampler_options = _check_options(name, "sampler_options", raw.get("sampler_options"),
                                          sampler_class(spec.sampler))
    spec.pruner_options = _check_options(name, "pruner_options", raw.get("pruner_options"), pruner_class(spec.pruner))
    lr = _mapping(name, "lr_scaling", raw.get("lr_scaling"))
    if lr is not None:
        if set(lr) != {"base_batch_size"}:
            raise _fail(name, f"lr_scaling takes exactly base_batch_size (optim.lr is the rate at that effective "
                              f"batch size), got {sorted(lr)}")
        _int(name, "lr_scaling.base_batch_size", lr["base_batch_size"], 1)
    spec.lr_scaling = lr
    storage = raw.get("storage")
    if storage is not None:
        _check_storage_url(name, storage)
    spec.storage = storage
    spec.table = _mapping(name, "table", raw.get("table"))
    spec.report = _mapping(name, "report", raw.get("report"))
    _check_consistency(spec)
    return spec


def _check_storage_url(sweep: str, url: Any) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str):
        raise _fail(sweep, f"storage must be a database URL string, got {url!r}")
    try:
        make_url(url)
    except ArgumentError:
        raise _fail(sweep, f"storage {url!r} is not a database URL (e.g. postgresql://user@host:5432/db, "
                           "sqlite:///path/study.db)") from None


def _check_consistency(spec: SweepSpec) -> None:
    name = spec.name
    seen: dict[str, str] = {}
    for where, keys in [*((f"grid '{d.label}'", d.keys) for d in spec.grid),
                        *((f"space '{s.key}'", (s.key,)) for s in spec.space)]:
        for k in keys:
            if k in seen:
                raise _fail(name, f"'{k}' is swept twice ({seen[k]} and {where})")
            if k in spec.base:
                raise _fail(name, f"'{k}' is both fixed in base and swept in {where}")
            seen[k] = where
    if spec.is_grid:
        if spec.space:
            raise _fail(name, "sampler grid takes no space; use sampler: tpe, random or qmc to search distributions")
        if spec.n_configs is not None:
            raise _fail(name, "n_configs is for sampler tpe/random; a grid runs every combination")
    else:
        if not spec.space:
            raise _fail(name, f"sampler {spec.sampler} needs a space of distributions to search")
        if spec.n_configs is None:
            raise _fail(name, f"sampler {spec.sampler} needs n_configs (how many configurations to sample)")
        if spec.objective.startswith("test_"):
            raise _fail(name, f"objective {spec.objective} would let the test set drive the search; use a "
                              "validation metric (val_acc, val_loss) with data.val_fraction > 0")
    if spec.grace_period is not None and spec.grace_period <= spec.heartbeat_interval:
        raise _fail(name, f"grace_period ({spec.grace_period}) must exceed heartbeat_interval "
                          f"({spec.heartbeat_interval})")


def sweep_file(name: str, search: tuple[Path, ...] = ()) -> Path:
    """The sweep file of `sweep=name`: a path to a YAML file, or `<config dir>/sweep/<name>.yaml` in the package's
    configs or a user config directory (`search`). An unknown name lists the sweeps that exist.

    Raises:
        ConfigError: no such file (one line naming it).
    """
    from normbench.config import check_group_choice
    from normbench.paths import group_file, is_file_argument

    if is_file_argument(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"sweep file {path} does not exist (sweep=PATH takes a YAML file; sweep=NAME one of "
                              "configs/sweep/)")
        return path.resolve()
    check_group_choice("sweep", name, search)
    found = group_file("sweep", name, search)
    assert found is not None  # check_group_choice found it
    return found


def load_spec(name: str, overrides: Mapping[str, Any] | None = None, search: tuple[Path, ...] = ()) -> SweepSpec:
    """Reads the sweep file of `sweep=name` (see `sweep_file`), applies `sweep.<key>` overrides, validates."""
    from omegaconf import OmegaConf

    from normbench.paths import is_file_argument

    path = sweep_file(name, search)
    if is_file_argument(name):
        name = path.stem
        check_study_name(name, f"sweep file {path}: its name")
    try:
        # OmegaConf's YAML loader reads 1e-3 as a float (plain YAML 1.1 reads it as a string).
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # noqa: BLE001 - YAML syntax and interpolation errors come in many classes
        msg = " ".join(str(e).split())
        raise _fail(name, f"cannot read {path}: {msg}") from None
    if loaded is not None and not isinstance(loaded, Mapping):
        raise _fail(name, f"{path} must hold a mapping of settings (base, grid, seeds, ...), got a "
                          f"{type(loaded).__name__}")
    if not loaded:  # an empty or comment-only file would run a one-trial sweep of the defaults
        raise _fail(name, f"{path} is empty (or only comments); a sweep file declares at least base, grid or "
                          "seeds (see configs/sweep/bn_vs_gn.yaml)")
    raw = dict(loaded)
    for key, value in (overrides or {}).items():
        if key not in SPEC_KEYS:
            raise _fail(name, f"unknown key 'sweep.{key}'; accepted: {', '.join('sweep.' + k for k in SPEC_KEYS)}")
        raw[key] = value
    return parse_spec(name, raw, str(path))


def split_args(args: list[str]) -> tuple[str | None, dict[str, Any], list[str]]:
    """Splits command-line overrides into (sweep name, `sweep.<key>` settings, run overrides)."""
    name: str | None = None
    settings: dict[str, Any] = {}
    rest: list[str] = []
    for text in args:
        head = text.split("=", 1)[0]
        if head != "sweep" and not head.startswith("sweep."):
            rest.append(text)
            continue
        ov = parse(text)
        if head == "sweep":
            name = str(ov.value)
        else:
            key = head[len("sweep."):]
            if "." in key:
                raise ConfigError(f"'{head}': only top-level sweep settings can be overridden (sweep.<key>=...)")
            settings[key] = ov.value
    if settings and name is None:
        raise ConfigError(f"sweep settings ({', '.join('sweep.' + k for k in settings)}) need sweep=NAME")
    return name, settings, rest
