"""Config composition (Hydra's compose API) and validation against typed schemas.

`load_config(overrides)` composes `configs/config.yaml` with Hydra-style overrides, then checks every
key and type against the dataclass schemas below (and, for `model`, `norm` and `data`, against the
options that the chosen registry entry declares in its signature). Every problem is a ConfigError with
one line that names the key and what is accepted, raised before any work starts.

Overrides:
    norm=gn                      group choice (a file configs/norm/gn.yaml; registry aliases accepted)
    norm.groups=2 / seed=3       value override (unknown keys are reported by the validator)
    experiment=d2l_lenet_bn      a preset from configs/experiment/
    data.root=~/data             a value starting with `~` is a path (the loaders expand it)
    optim.lr=${oc.env:LR,0.5}    interpolations are resolved first; a string they give is read as the
                                 command line reads a value (0.5 is a number, true a bool)

`hydra.*` keys are refused: normbench composes with Hydra's compose API and never runs Hydra's app
(no hydra.run.dir, no job logging); the run directory is `out_dir`.

`from_mapping(dict)` validates a config given in Python, possibly partial, against the same YAML defaults
as the command line: the Python API and the CLI give the same run for the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from normbench.errors import ConfigError
from normbench.registry import Registry, coerce


@dataclass
class DataSchema:
    name: str = "fashion_mnist"
    root: str | None = None
    batch_size: int = 256
    eval_batch_size: int = 1024
    train_subset: int | None = None
    test_subset: int | None = None
    val_fraction: float = 0.0
    drop_last: bool = True
    augment: bool = False
    normalize: bool = False
    download: bool = True
    # which samples a training batch holds (normbench.data.composition): iid | k_classes
    batch_composition: str = "iid"
    classes_per_batch: int | None = None  # K of k_classes (must divide batch_size); null otherwise


@dataclass
class ModelSchema:
    name: str = "lenet"


@dataclass
class NormSchema:
    name: str = "bn"


@dataclass
class OptimSchema:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    scheduler: Literal["none", "cosine"] = "none"


@dataclass
class TrainerSchema:
    max_epochs: int = 10
    accumulate_grad_batches: int = 1
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = 1
    emulate_devices: int = 1  # W data-parallel devices on one: BN-type norms normalize per slice of batch_size
    strategy: str = "auto"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    gradient_clip_val: float | None = None
    deterministic: bool = True
    progress_bar: bool = True
    # torch intra-op threads. CPU results depend on it (reductions split differently), so it is part of
    # the config; null: torch's own default (torch.get_num_threads()), resolved when the run starts.
    threads: int | None = None


@dataclass
class LoggerSchema:
    name: Literal["none", "csv", "wandb"] = "none"
    project: str = "normbench"
    group: str | None = None
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class CalibSchema:
    """Running-statistics calibration (normbench.lit.calibration), measured in every run by default."""

    enabled: bool = True
    samples: int = 8192  # training samples in the population-statistics pass
    every_n_epochs: int = 1  # the last epoch is always measured
    recalibrate: bool = False  # report the population-statistics model's accuracy as test_acc
    precise_test_every_epoch: bool = False  # test_acc_precise at every measured epoch, not just the last
    ece_bins: int = 15  # confidence bins of test_ece
    # the example's weight in the `weighted` test mode (inference example weighing); null: 1 / the samples
    # of one norm call (an example's share of a training batch)
    weighted_alpha: float | None = None


@dataclass
class RootSchema:
    seed: int = 0
    out_dir: str | None = None
    results_dir: str = "runs/sweeps"


@dataclass
class Section:
    """A config section: fixed typed fields, plus the options of a registry entry chosen by `name`."""

    schema: type
    registry: Registry | None = None
    group: bool = True  # chosen with `<section>=<file>` from configs/<section>/


SECTIONS: dict[str, Section] = {}


def register_section(name: str, schema: type, registry: Registry | None = None, group: bool = True) -> None:
    """Adds a top-level config section (later features, e.g. calibration, register theirs)."""
    SECTIONS[name] = Section(schema, registry, group)


def _register_core_sections() -> None:
    from normbench.data import DATASETS
    from normbench.models import MODELS
    from normbench.norms import NORMS

    register_section("model", ModelSchema, MODELS)
    register_section("norm", NormSchema, NORMS)
    register_section("data", DataSchema, DATASETS)
    register_section("optim", OptimSchema)
    register_section("trainer", TrainerSchema)
    register_section("logger", LoggerSchema)
    register_section("calib", CalibSchema)


_register_core_sections()

# Groups that select a whole preset rather than a section's values.
PRESET_GROUPS = ("experiment",)


def config_dir() -> Path:
    """configs/ of the installed package (wheel) or of the source checkout (editable install)."""
    env = os.environ.get("NORMBENCH_CONFIG_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here / "configs", here.parent / "configs"):
        if (cand / "config.yaml").is_file():
            return cand
    raise ConfigError(f"normbench configs not found next to {here}")  # pragma: no cover


def group_choices(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _groups() -> list[str]:
    return [*[n for n, s in SECTIONS.items() if s.group], *PRESET_GROUPS, *EXTRA_GROUPS]


EXTRA_GROUPS: list[str] = ["sweep"]  # groups owned by later features (e.g. sweep)
# Groups that select what the command runs rather than part of one run's config (sweep=NAME: a sweep
# of many runs, see normbench.sweep); the CLI hands them to their runner before composing.
RUNNER_GROUPS = ("sweep",)


def check_group_choice(group: str, value: object) -> str:
    """The file name in configs/<group>/ that `value` selects (registry aliases accepted).

    Raises:
        ConfigError: no such file; the message lists the accepted names.
    """
    choices = group_choices(group)
    if value in choices:
        return str(value)
    section = SECTIONS.get(group)
    if section is not None and section.registry is not None and str(value) in section.registry:
        canonical = section.registry.get(str(value)).name
        if canonical in choices:
            return canonical
    raise ConfigError(f"unknown {group} '{value}'; accepted: {', '.join(choices) or '(none)'}")


def _quote_home(text: str) -> str:
    """`key=~/path` -> `key='~/path'`: Hydra's grammar has no bare `~` in values; the loaders expand it."""
    key, sep, value = text.partition("=")
    if sep and value.startswith("~") and "'" not in value and '"' not in value:
        return f"{key}='{value}'"
    return text


def _prepare_overrides(overrides: list[str]) -> list[str]:
    """Checks group choices against the files on disk and lets value overrides through to validation."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    groups = _groups()
    for text in overrides:
        text = _quote_home(text)
        try:
            (ov,) = parser.parse_overrides([text])
        except Exception as e:  # noqa: BLE001 - hydra's parse errors are several classes
            raise ConfigError(f"cannot parse override '{text}': {str(e).splitlines()[0]}") from None
        key = ov.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise ConfigError(f"override '{text}': hydra.* settings are not used (normbench runs nothing through "
                              "Hydra's app launcher); accepted instead: out_dir=DIR for the run directory")
        if ov.is_sweep_override():
            raise ConfigError(f"override '{text}' lists several values; sweeps are declared in configs/sweep/ files")
        if key in groups and ov.package is None and text[0] not in "+~":
            value = ov.value()
            if value is None:
                out.append(text)
                continue
            choice = check_group_choice(key, value)
            if key in RUNNER_GROUPS:
                raise ConfigError(f"{key}={choice} is run by `python -m normbench run {key}={choice}`; "
                                  "load_config composes the config of a single run")
            out.append(text if choice == value else f"{key}={choice}")
            continue
        if text[0] in "+~":
            out.append(text)
        else:
            out.append("++" + text)  # unknown keys are reported by validate(), with the accepted ones
    return out


def compose(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Composes configs/config.yaml with `overrides`; returns a plain, resolved dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    prepared = _prepare_overrides(list(overrides))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=prepared)
        return resolve(cfg)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - hydra/omegaconf raise many classes; show the cause
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        msg = " ".join(str(cause).split()) or type(cause).__name__
        raise ConfigError(f"config composition failed: {msg}") from None
    finally:
        GlobalHydra.instance().clear()


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """A plain dict of `cfg` with its interpolations resolved, each string they give typed like an override.

    Resolvers such as `oc.env` always return strings: `optim.lr=${oc.env:LR,0.5}` would otherwise reach the
    type checks as the string '0.5'.
    """
    paths = _interpolation_paths(cfg, ())
    out = OmegaConf.to_container(cfg, resolve=True)
    for path in paths:
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent[path[-1]], str):
            parent[path[-1]] = parse_value(parent[path[-1]])
    return out  # type: ignore[return-value]


def _interpolation_paths(node: Any, prefix: tuple) -> list[tuple]:
    from omegaconf import ListConfig

    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    paths = []
    for key in keys:
        if OmegaConf.is_interpolation(node, key):
            paths.append((*prefix, key))
            continue
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
            paths.extend(_interpolation_paths(child, (*prefix, key)))
    return paths


def parse_value(text: str) -> Any:
    """`text` read as the value of a command-line override (number, bool, null, list, ... or the string)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (ov,) = OverridesParser.create().parse_overrides([f"k={text}"])
    except Exception:  # noqa: BLE001 - not override syntax (e.g. spaces): it stays a string
        return text
    if ov.is_sweep_override():  # `a,b` is a sweep on the command line; here it is the text
        return text
    return ov.value()


def _check_fields(values: dict[str, Any], schema: type, where: str, extra: dict | None = None,
                  extra_what: str = "") -> dict[str, Any]:
    """Types-checks `values` against dataclass `schema` (+ registry options `extra`); fills defaults."""
    known = {f.name: f for f in fields(schema)}
    out: dict[str, Any] = {}
    extra = extra or {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key in known:
            out[key] = _coerce(value, known[key].type, path)
        elif key in extra:
            out[key] = _coerce(value, extra[key].type, path)
        else:
            accepted = [*known, *extra]
            raise ConfigError(f"unknown key '{path}'{extra_what}; accepted: {', '.join(accepted)}")
    for name, f in known.items():
        if name not in out:
            if f.default is not MISSING:
                out[name] = f.default
            elif f.default_factory is not MISSING:  # type: ignore[misc]
                out[name] = f.default_factory()  # type: ignore[misc]
    for name, opt in extra.items():
        out.setdefault(name, opt.default)
    return out


def _coerce(value: Any, tp: Any, path: str) -> Any:
    if isinstance(tp, str):  # postponed annotations on the schema dataclasses
        tp = eval(tp, globals())  # noqa: S307 - our own annotations only
    try:
        return coerce(value, tp, path)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def validate(raw: dict[str, Any]) -> DictConfig:
    """Checks a composed config; returns it with defaults filled and types coerced."""
    raw = dict(raw)
    out: dict[str, Any] = {}
    root_fields = {f.name for f in fields(RootSchema)}
    for key in raw:
        if key not in SECTIONS and key not in root_fields:
            accepted = sorted([*root_fields, *SECTIONS])
            raise ConfigError(f"unknown key '{key}'; accepted: {', '.join(accepted)}")
    out.update(_check_fields({k: v for k, v in raw.items() if k in root_fields}, RootSchema, ""))
    for name, section in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"'{name}' must be a mapping of options, got {values!r}")
        extra, what = None, ""
        if section.registry is not None:
            entry_name = values.get("name", getattr(section.schema, "name", None))
            try:
                entry = section.registry.get(str(entry_name))
            except ValueError as e:
                raise ConfigError(str(e)) from None
            values = {**values, "name": entry.name}
            extra, what = entry.options, f" for {name}={entry.name}"
        out[name] = _check_fields(values, section.schema, name, extra, what)
    check_semantics(out)
    return OmegaConf.create(out)


MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces


def check_semantics(cfg: dict[str, Any]) -> None:
    """Cross-field checks that need no data: ranges, batch sizes vs. batch-statistics norms, devices."""
    from normbench.norms import NORMS

    data, trainer, optim = cfg["data"], cfg["trainer"], cfg["optim"]
    if not 0 <= cfg["seed"] <= MAX_SEED:
        raise ConfigError(f"seed must be in [0, {MAX_SEED}] (numpy's seed range), got {cfg['seed']}")
    positive = {
        "data.batch_size": data["batch_size"], "data.eval_batch_size": data["eval_batch_size"],
        "trainer.max_epochs": trainer["max_epochs"], "trainer.devices": trainer["devices"],
        "trainer.emulate_devices": trainer["emulate_devices"],
        "trainer.accumulate_grad_batches": trainer["accumulate_grad_batches"],
    }
    if trainer["threads"] is not None:
        positive["trainer.threads"] = trainer["threads"]
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    check_calib(cfg["calib"])
    check_optim(optim)
    if trainer["gradient_clip_val"] is not None and not trainer["gradient_clip_val"] > 0:
        raise ConfigError(f"trainer.gradient_clip_val must be > 0 or null, got {trainer['gradient_clip_val']}")
    check_strategy(trainer["strategy"])
    check_data(data)
    norm_entry = NORMS.get(cfg["norm"]["name"])
    norm_opts = {k: v for k, v in cfg["norm"].items() if k != "name"}
    try:
        norm_entry.fn(8, **norm_opts)  # option value checks (momentum range, eps, ...) before any work
    except ValueError as e:
        msg = str(e)
        if "does not divide" not in msg:  # channel-dependent checks are made per layer in build_model
            raise ConfigError(msg) from None
    if trainer["emulate_devices"] > 1 and cfg["norm"].get("accumulation_aware"):
        raise ConfigError("norm.accumulation_aware=true cannot be combined with trainer.emulate_devices > 1; "
                          "use one of them")
    if norm_entry.meta.get("batch_stats") and norm_batch_size(cfg) < 2:
        batch_free = [n for n in NORMS.names() if not NORMS.get(n).meta.get("batch_stats")]
        raise ConfigError(
            f"norm={norm_entry.name} normalizes with batch statistics but each call would see "
            f"{norm_batch_size(cfg)} sample (data.batch_size={data['batch_size']}); use a batch size >= 2 "
            f"or a batch-independent norm: {', '.join(batch_free)}")
    if trainer["accelerator"] == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator=gpu but no CUDA device is available; accepted here: auto, cpu")
    if trainer["precision"] == "16-mixed" and resolve_accelerator(trainer["accelerator"]) == "cpu":
        raise ConfigError("trainer.precision=16-mixed needs a GPU; on CPU use 32 or bf16-mixed")


def check_optim(optim: dict[str, Any]) -> None:
    """The optimizer's ranges (values are finite already: the schema refuses NaN and infinities)."""
    if not optim["lr"] > 0:
        raise ConfigError(f"optim.lr must be > 0, got {optim['lr']}")
    if not 0 <= optim["momentum"] < 1:
        raise ConfigError(f"optim.momentum must be in [0, 1), got {optim['momentum']}")
    if optim["weight_decay"] < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0, got {optim['weight_decay']}")


def check_strategy(strategy: str) -> None:
    """`trainer.strategy`: auto or a name in Lightning's strategy registry."""
    if strategy == "auto":
        return
    from lightning.pytorch.strategies import StrategyRegistry

    names = StrategyRegistry.available_strategies()
    if strategy.lower() not in names:
        short = [n for n in names if "_find_unused" not in n]
        raise ConfigError(f"trainer.strategy '{strategy}' is unknown; accepted: auto, {', '.join(short)}")


def check_data(data: dict[str, Any]) -> None:
    """The data section's ranges, the dataset's own option checks and subsets vs. the dataset's size."""
    from normbench.data import DATASETS

    if not 0.0 <= data["val_fraction"] < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {data['val_fraction']}")
    from normbench.data.composition import check_composition

    try:
        check_composition(data["batch_composition"], data["batch_size"], None, data["classes_per_batch"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    entry = DATASETS.get(data["name"])
    options = {k: v for k, v in data.items() if k in entry.options}
    check = entry.meta.get("check")  # fn(root, **options): value ranges, before anything is generated or read
    if check is not None:
        try:
            check(data["root"], **options)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    sizes = entry.meta.get("sizes")  # fn(**options) -> (train, test) samples
    if sizes is not None:
        for what, n, total in zip(("train", "test"), (data["train_subset"], data["test_subset"]), sizes(**options),
                                  strict=True):
            if n is not None and not 1 <= n <= total:
                raise ConfigError(f"data.{what}_subset={n} must be in [1, {total}]: {entry.name} has {total} "
                                  f"{what} samples (null: all of them)")


def check_calib(calib: dict[str, Any]) -> None:
    """The calib section's ranges (a population pass needs two samples to have a variance)."""
    for key, minimum in (("samples", 2), ("every_n_epochs", 1), ("ece_bins", 1)):
        if calib[key] < minimum:
            raise ConfigError(f"calib.{key} must be >= {minimum}, got {calib[key]}")
    alpha = calib.get("weighted_alpha")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"calib.weighted_alpha must be in [0, 1] or null (1 / the norm batch size), got {alpha}")


def norm_batch_size(cfg: dict[str, Any] | DictConfig) -> int:
    """Samples each norm call sees in training: the per-device micro-batch (or the norm's own sub-batch)."""
    from normbench.norms import NORMS

    entry = NORMS.get(cfg["norm"]["name"])
    per_call = entry.meta.get("norm_batch_size")  # e.g. ghost BN: fn(cfg) -> its virtual batch
    if per_call is not None:
        return int(per_call(cfg))
    return int(cfg["data"]["batch_size"])


def step_batch_size(cfg: dict[str, Any] | DictConfig) -> int:
    """Samples in one training forward pass of one process: data.batch_size per emulated device."""
    return int(cfg["data"]["batch_size"]) * int(cfg["trainer"].get("emulate_devices", 1))


def effective_batch_size(cfg: dict[str, Any] | DictConfig) -> int:
    """Samples behind one optimizer step: batch x accumulation x devices x emulated devices."""
    t = cfg["trainer"]
    return step_batch_size(cfg) * int(t["accumulate_grad_batches"]) * int(t["devices"])


def per_device_norms(cfg: dict[str, Any] | DictConfig) -> bool:
    """Whether the run's norm layers normalize per emulated device (batch-statistics norms that do not sync)."""
    from normbench.norms import NORMS

    entry = NORMS.get(cfg["norm"]["name"])
    return (int(cfg["trainer"].get("emulate_devices", 1)) > 1 and bool(entry.meta.get("batch_stats"))
            and not entry.meta.get("syncs_devices"))


def resolve_accelerator(accelerator: str) -> str:
    if accelerator != "auto":
        return accelerator
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def load_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Composes and validates the run config for `overrides` (Hydra syntax)."""
    return validate(compose(overrides))


def from_mapping(values: Mapping[str, Any] | DictConfig) -> DictConfig:
    """Validates a config given as a (possibly partial) mapping, with the command line's YAML defaults.

    Each section's `name` picks its config file as a group choice does (`{'data': {'name': 'synthetic'}}` is
    `data=synthetic`: batch 32, its dataset options, ...), then the mapping's values replace the composed
    ones. A complete config (e.g. from `compose`) comes back unchanged. A registry entry without a config
    file gets its section from the mapping and the entry's signature defaults.

    Raises:
        ConfigError: as `load_config`, naming the key and the accepted values.
    """
    given = to_dict(values) if isinstance(values, DictConfig) else dict(values)
    choices, own = [], set()
    for name, section in SECTIONS.items():
        part = given.get(name)
        if not section.group or not isinstance(part, Mapping) or part.get("name") is None:
            continue
        try:
            choices.append(f"{name}={check_group_choice(name, part['name'])}")
        except ConfigError:
            if section.registry is None or str(part["name"]) not in section.registry:
                raise
            own.add(name)  # registered in code, no file: nothing to compose it from
    base = compose(choices)
    for name in own:
        base[name] = {}
    return validate(_merged(base, given))


def _merged(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(cfg: DictConfig | dict) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)  # type: ignore[return-value]


def options_of(section: DictConfig | dict) -> dict[str, Any]:
    """A registry section's options (everything but `name`)."""
    return {k: v for k, v in to_dict(section).items() if k != "name"}
