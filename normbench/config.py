"""Config composition (Hydra's compose API) and validation against typed schemas.

`load_config(overrides)` composes `configs/config.yaml` with Hydra-style overrides, then checks every
key and type against the dataclass schemas below (and, for `model`, `norm` and `data`, against the
options that the chosen registry entry declares in its signature). Every problem is a ConfigError with
one line that names the key and what is accepted, raised before any work starts.

Overrides:
    norm=gn                      group choice (a file configs/norm/gn.yaml; registry aliases accepted)
    norm=pkg.mod:MyNorm          a plugin (normbench.plugins): an import path or an installed entry point's
                                 name; with no file, its section is its name and its signature's defaults
    norm.groups=2 / seed=3       value override (unknown keys are reported by the validator)
    experiment=d2l_lenet_bn      a preset from configs/experiment/
    data.root=~/data             a value starting with `~` is a path (the loaders expand it)
    optim.lr=${oc.env:LR,0.5}    interpolations are resolved first; a string they give is read as the
                                 command line reads a value (0.5 is a number, true a bool)

`hydra.*` keys are refused: normbench composes with Hydra's compose API and never runs Hydra's app
(no hydra.run.dir, no job logging); the run directory is `out_dir`. The one exception is Hydra's search
path, `hydra.searchpath=[file:///my/configs]`: user config directories whose groups (norm/, sweep/,
experiment/, ...) add choices to the package's (a name in both is the package's).

`from_mapping(dict)` validates a config given in Python, possibly partial, against the same YAML defaults
as the command line: the Python API and the CLI give the same run for the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from omegaconf import DictConfig, OmegaConf

from normbench import norms, schema
from normbench.data import DATASETS
from normbench.data.composition import check_composition
from normbench.errors import ConfigError
from normbench.models import MODELS
from normbench.overrides import format_value, parse, parse_value
from normbench.paths import config_dir, group_choices
from normbench.registry import Registry
from normbench.run_facts import norm_batch_size
from normbench.schema import option

MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces


@dataclass
class DataSchema:
    name: str = "fashion_mnist"
    root: str | None = None
    batch_size: int = option(256, low=1)
    eval_batch_size: int = option(1024, low=1)
    train_subset: int | None = None
    test_subset: int | None = None
    val_fraction: float = option(0.0, low=0, high=1, high_open=True)
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
    lr: float = option(1.0, low=0, low_open=True)
    momentum: float = option(0.0, low=0, high=1, high_open=True)
    weight_decay: float = option(0.0, low=0)
    # Weight decay on the norm layers' parameters (scales, shifts), as torchvision's references split them
    # (split_normalization_params): decaying them is a confound when norms are compared. null: weight_decay.
    norm_weight_decay: float | None = option(0.0, low=0)
    nesterov: bool = False
    # The learning-rate schedule, stepped per optimizer step (normbench.training.schedule): a linear warm-up of
    # warmup_steps, then a constant rate (none) or a cosine / linear decay reaching 0 when training ends.
    scheduler: Literal["none", "cosine", "linear"] = "none"
    warmup_steps: int = option(0, low=0)


@dataclass
class TrainerSchema:
    max_epochs: int = option(10, low=1)
    accumulate_grad_batches: int = option(1, low=1)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    # data-parallel processes; auto: every GPU with accelerator gpu (or auto on a GPU machine), else 1.
    # Resolved to a number when the config is validated (the record says how many ran).
    devices: int | Literal["auto"] = 1
    # W data-parallel devices on one: BN-type norms normalize per slice of batch_size
    emulate_devices: int = option(1, low=1)
    strategy: str = "auto"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    gradient_clip_val: float | None = option(None, low=0, low_open=True)
    deterministic: bool | Literal["warn"] = True  # warn: deterministic kernels where they exist
    progress_bar: bool = True
    # Lightning's run-length knobs, applied to normbench's own batching (normbench.data.memory.BatchLoader):
    max_steps: int | None = option(None, low=1)  # stop after this many optimizer steps (null: max_epochs decides)
    # training batches per epoch: an integer (batches) or a fraction in (0, 1] of the epoch; null: all
    limit_train_batches: int | float | None = None
    # one training batch, one eval batch per split, no checkpoint, logger or after-training measurements
    fast_dev_run: bool = False
    profiler: Literal["simple", "advanced"] | None = None  # report written to <out_dir>/fit-profile.txt
    checkpoint: bool = True  # write <out_dir>/last.ckpt after every epoch (normbench.training.checkpoint)
    # resume from this checkpoint (`last`: <out_dir>/last.ckpt); the run continues to the numbers an
    # uninterrupted run reaches. null: start fresh.
    ckpt_path: str | None = None
    # torch intra-op threads. CPU results depend on it (reductions split differently), so it is part of
    # the config; null: torch's own default (torch.get_num_threads()), resolved when the run starts.
    threads: int | None = option(None, low=1, say_null=False)
    # torch.compile the model's training forward (and so its backward); evaluation passes stay eager
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    # channels-last memory format for the model and its training batches (faster convolutions for some norms)
    channels_last: bool = False
    # off: precision / channels_last / compile as given; fastest: the variant measured fastest for the model and
    # norm (normbench/training/fast_paths.json); auto: that variant only where the science check
    # (results/fast_path_check) showed it equivalent to float32 eager within fast_path_margin points
    fast_path: Literal["off", "auto", "fastest"] = "off"
    fast_path_margin: float = option(1.5, low=0, low_open=True)  # percentage points of test accuracy
    # optimizer steps per Lightning batch (normbench.training.chunks): Lightning's per-batch cost is paid once
    # per chunk; the steps and their numbers are those of one step per batch. auto: chunks of about 4,096
    # samples, 1 to 32 steps (1 with several devices)
    chunk_steps: int | Literal["auto"] = "auto"


LoggerName = Literal["none", "csv", "wandb", "tensorboard"]


@dataclass
class LoggerSchema:
    # one logger, or several at once: logger=[csv,wandb] (the files of configs/logger/ merged, name a list)
    name: LoggerName | list[LoggerName] = "none"
    project: str = "normbench"
    group: str | None = None
    job_type: str = "train"  # W&B's job type; a sweep's trials: sweep-trial
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class CalibSchema:
    """The measurements after epochs (normbench.training.measurements), made in every run by default: running-
    statistics calibration (EMA vs population statistics), the accuracy split and the ECE of the predictions."""

    enabled: bool = True
    samples: int = option(8192, low=2)  # training samples in the population-statistics pass (2: a variance)
    every_n_epochs: int = option(1, low=1)  # the last epoch is always measured
    recalibrate: bool = False  # report the population-statistics model's accuracy as test_acc
    precise_test_every_epoch: bool = False  # test_acc_precise at every measured epoch, not just the last
    ece_bins: int = option(15, low=1)  # confidence bins of test_ece (the predictions' calibration error)
    # the example's weight in the `weighted` test mode (inference example weighing); null: 1 / the samples
    # of one norm call (an example's share of a training batch)
    weighted_alpha: float | None = option(None, low=0, high=1, note="(1 / the norm batch size)")


@dataclass
class RootSchema:
    seed: int = option(0, low=0, high=MAX_SEED, note="(numpy's seed range)")
    out_dir: str | None = None
    results_dir: str = "runs/sweeps"


@dataclass
class Section:
    """A config section: fixed typed fields, plus the options of a registry entry chosen by `name`."""

    schema: type
    registry: Registry | None = None
    group: bool = True  # chosen with `<section>=<file>` from configs/<section>/


# The run config's sections, in order; `model`, `norm` and `data` also take the options their registry
# entry declares. Each is chosen as a file of configs/<section>/ (`norm=gn`).
SECTIONS: dict[str, Section] = {
    "model": Section(ModelSchema, MODELS),
    "norm": Section(NormSchema, norms.NORMS),
    "data": Section(DataSchema, DATASETS),
    "optim": Section(OptimSchema),
    "trainer": Section(TrainerSchema),
    "logger": Section(LoggerSchema),
    "calib": Section(CalibSchema),
}

# Groups that take several choices at once (`logger=[csv,wandb]`): their files are merged and `name` lists them.
MULTI_CHOICE_GROUPS = ("logger",)
# Groups that select a whole preset rather than a section's values.
PRESET_GROUPS = ("experiment",)
# Groups that select what the command runs rather than part of one run's config (sweep=NAME: a sweep
# of many runs, see normbench.sweep); the CLI hands them to their runner before composing.
RUNNER_GROUPS = ("sweep",)


def _groups() -> list[str]:
    return [*[n for n, s in SECTIONS.items() if s.group], *PRESET_GROUPS, *RUNNER_GROUPS]


SEARCH_PATH_KEY = "hydra.searchpath"


def search_path(overrides: list[str] | tuple[str, ...]) -> tuple[Path, ...]:
    """The user config directories of a `hydra.searchpath=[file:///dir,...]` override (none: ()).

    Raises:
        ConfigError: not a list of `file://` URLs or paths, or a directory that does not exist.
    """
    dirs: list[Path] = []
    for given in overrides:
        if not given.lstrip("+").startswith(SEARCH_PATH_KEY + "="):
            continue
        value = parse(given).value
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, str) or not item or item.startswith("pkg://"):
                raise ConfigError(f"{SEARCH_PATH_KEY} takes a list of directories (file:///path or a path), got "
                                  f"{item!r}")
            path = Path(item[len("file://"):] if item.startswith("file://") else item).expanduser()
            if not path.is_dir():
                raise ConfigError(f"{SEARCH_PATH_KEY}: {path} is not a directory (a user config directory holds "
                                  "group folders such as norm/, sweep/, experiment/)")
            dirs.append(path.resolve())
    return tuple(dict.fromkeys(dirs))


def check_group_choice(group: str, value: object, search: tuple[Path, ...] = ()) -> str:
    """The file name in configs/<group>/ (or a user config directory of `search`) that `value` selects
    (registry aliases accepted).

    Raises:
        ConfigError: no such file; the message lists the accepted names.
    """
    choices = group_choices(group, search)
    if value in choices:
        return str(value)
    section = SECTIONS.get(group)
    if section is not None and section.registry is not None:
        registry = section.registry
        try:  # a plugin (an import path, an installed entry point) is loaded here: its error is the message
            entry = registry.get(str(value)) if str(value) in registry or is_plugin(registry, value) else None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if entry is not None:
            # a file of the group first (its options); an entry without one is composed from its signature
            return entry.name if entry.name in choices or entry.origin != "built-in" else _no_file(group, entry)
        choices = [*choices, *(n for n in registry.plugin_names() if n not in choices)]
        raise ConfigError(f"unknown {group} '{value}'; accepted: {', '.join(choices) or '(none)'}, or an import "
                          "path package.module:Name")
    raise ConfigError(f"unknown {group} '{value}'; accepted: {', '.join(choices) or '(none)'}")


def is_plugin(registry: Registry, value: object) -> bool:
    """Whether `value` names a plugin of `registry`: an import path, or an installed entry point's name."""
    from normbench.plugins import is_import_path
    from normbench.registry import normalize_name

    return is_import_path(str(value)) or normalize_name(str(value)) in map(normalize_name, registry.plugin_names())


def _no_file(group: str, entry: Any) -> str:
    raise ConfigError(f"{group} '{entry.name}' is registered in code but has no configs/{group}/{entry.name}.yaml "
                      "to choose it by; pass it by import path (package.module:Name) or in Python (from_mapping)")


def _prepare_overrides(overrides: list[str]) -> list[str]:
    """Checks group choices against the files on disk and lets value overrides through to validation."""
    out = []
    groups = _groups()
    search = search_path(overrides)
    if search:  # one override, absolute paths: the composed config does not depend on the working directory
        out.append(f"{SEARCH_PATH_KEY}=[{','.join(format_value('file://' + str(p)) for p in search)}]")
    for given in overrides:
        ov = parse(given)
        text, key = ov.text, ov.key
        if key == SEARCH_PATH_KEY:
            continue
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise ConfigError(f"override '{text}': hydra.* settings are not used (normbench runs nothing through "
                              "Hydra's app launcher); accepted instead: out_dir=DIR for the run directory, and "
                              f"{SEARCH_PATH_KEY}=[file:///DIR] for user config directories")
        if key in groups and ov.package is None and ov.prefix in ("", "+", "++"):
            # Every group already has a default entry in configs/config.yaml, so Hydra's `+group=x` (add) and
            # `++group=x` mean the same as `group=x` here; they are accepted as that.
            text = text[len(ov.prefix):]
            value = ov.value
            if value is None:
                out.append(text)
                continue
            if isinstance(value, list):
                out.extend(_multi_choice(key, value, text))
                continue
            choice = check_group_choice(key, value, search)
            if key in RUNNER_GROUPS:
                raise ConfigError(f"{key}={choice} is run by `python -m normbench run {key}={choice}`; "
                                  "load_config composes the config of a single run")
            if choice not in group_choices(key, search):
                # a plugin (normbench.plugins) has no file: the section is its name, then its signature's
                # defaults (filled in by validate) and the overrides that follow
                out.extend([f"~{key}", f"++{key}={{name:{format_value(choice)}}}"])
                continue
            out.append(text if choice == value else f"{key}={choice}")
            continue
        if text[0] in "+~":
            out.append(text)
        else:
            out.append("++" + text)  # unknown keys are reported by validate(), with the accepted ones
    return out


def _multi_choice(group: str, values: list, text: str) -> list[str]:
    """Overrides for `group=[a,b]`: Hydra merges the files a and b; `<group>.name` then lists both."""
    if group not in MULTI_CHOICE_GROUPS:
        raise ConfigError(f"override '{text}': {group} takes one choice; accepted lists: "
                          f"{', '.join(g + '=[a,b]' for g in MULTI_CHOICE_GROUPS)}")
    choices = [check_group_choice(group, v) for v in values]
    if not choices or len(set(choices)) != len(choices) or (len(choices) > 1 and "none" in choices):
        accepted = ", ".join(c for c in group_choices(group) if c != "none")
        raise ConfigError(f"override '{text}': {group}=[...] takes distinct choices among {accepted}")
    listed = ",".join(choices)
    return [f"{group}=[{listed}]", f"++{group}.name=[{listed}]"]


def logger_names(logger: Mapping[str, Any] | DictConfig) -> list[str]:
    """The loggers a run's `logger` section selects (`none`: no logger, an empty list)."""
    name = logger["name"]
    names = [name] if isinstance(name, str) else list(name)
    return [n for n in names if n != "none"]


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
        cause: BaseException = e
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
    out = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a dict
    for path in paths:
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent[path[-1]], str):
            parent[path[-1]] = parse_value(parent[path[-1]])
    return out


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


def validate(raw: dict[str, Any]) -> DictConfig:
    """Checks a composed config; returns it with defaults filled and types coerced."""
    raw = dict(raw)
    out: dict[str, Any] = {}
    root_fields = schema.keys(RootSchema)
    for key in raw:
        if key not in SECTIONS and key not in root_fields:
            accepted = sorted([*root_fields, *SECTIONS])
            raise ConfigError(f"unknown key '{key}'; accepted: {', '.join(accepted)}")
    out.update(schema.check({k: v for k, v in raw.items() if k in root_fields}, RootSchema))
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
        out[name] = schema.check(values, section.schema, name, extra=extra, extra_what=what)
    out["trainer"]["devices"] = resolve_devices(out["trainer"]["devices"], out["trainer"]["accelerator"])
    check_semantics(out)
    return OmegaConf.create(out)


def resolve_devices(devices: int | str, accelerator: str) -> int:
    """`trainer.devices` as a number: `auto` is every GPU when the run uses GPUs, else 1."""
    if devices == "auto":
        if resolve_accelerator(accelerator) == "gpu":
            import torch

            return max(1, torch.cuda.device_count())
        return 1
    if isinstance(devices, str) or devices < 1:
        raise ConfigError(f"trainer.devices must be >= 1 or auto, got {devices!r}")
    return int(devices)


def check_run_length(trainer: dict[str, Any]) -> None:
    """`trainer.limit_train_batches`: an integer >= 1 (batches) or a fraction in (0, 1]."""
    limit = trainer["limit_train_batches"]
    if limit is None:
        return
    if isinstance(limit, int) and limit < 1 or isinstance(limit, float) and not 0 < limit <= 1:
        raise ConfigError(f"trainer.limit_train_batches must be an integer >= 1 (batches per epoch), a fraction "
                          f"in (0, 1] or null, got {limit!r}")


def check_chunk_steps(trainer: dict[str, Any]) -> None:
    """`trainer.chunk_steps`: auto, or an integer >= 1; more than 1 only on one device."""
    steps = trainer["chunk_steps"]
    if steps == "auto":
        return
    if steps < 1:  # an integer here: the schema checked the type
        raise ConfigError(f"trainer.chunk_steps must be an integer >= 1 or auto, got {steps!r}")
    devices = trainer["devices"]
    if steps > 1 and devices != 1:
        raise ConfigError(f"trainer.chunk_steps={steps} needs trainer.devices=1 (a data-parallel strategy expects "
                          f"one backward pass per forward call), got devices={devices}; accepted: 1 or auto")


def check_semantics(cfg: dict[str, Any]) -> None:
    """What the schemas cannot say (their types and ranges are checked): the strategy, the dataset's own
    options and sizes, the norm's options and its batches, devices."""
    data, trainer = cfg["data"], cfg["trainer"]
    check_strategy(trainer["strategy"])
    check_run_length(trainer)
    check_chunk_steps(trainer)
    check_optim(cfg["optim"])
    if "wandb" in logger_names(cfg["logger"]):
        check_wandb_names(cfg["logger"])
    if "tensorboard" in logger_names(cfg["logger"]):
        from normbench.training.tensorboard import check_tensorboard

        check_tensorboard()
    check_data(data)
    model_entry = MODELS.get(cfg["model"]["name"])
    model_check = model_entry.meta.get("check")  # fn(options): the model's own option ranges
    if model_check is not None:
        try:
            model_check({k: v for k, v in cfg["model"].items() if k != "name"})
        except ValueError as e:
            raise ConfigError(str(e)) from None
    norm_entry = norms.get(cfg["norm"]["name"])
    try:  # value checks (momentum range, eps, ...); channel-dependent ones are made per layer in build_model
        norms.check_options(norm_entry.name, {k: v for k, v in cfg["norm"].items() if k != "name"})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if trainer["emulate_devices"] > 1 and cfg["norm"].get("accumulation_aware"):
        raise ConfigError("norm.accumulation_aware=true cannot be combined with trainer.emulate_devices > 1; "
                          "use one of them")
    if norm_entry.meta.get("batch_stats") and norm_batch_size(cfg) < 2:
        batch_free = [n for n in norms.available() if not norms.get(n).meta.get("batch_stats")]
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
    """What torch's optimizer would refuse only when training starts (after the data loaded)."""
    if optim["name"] == "sgd" and optim["nesterov"] and optim["momentum"] == 0:
        raise ConfigError("optim.nesterov=true needs optim.momentum > 0 (Nesterov momentum without momentum is "
                          "plain SGD, which torch refuses); set a momentum or optim.nesterov=false")


W_AND_B_FORBIDDEN = "/\\#?%:"  # characters W&B refuses in a project name (it would fail when the run starts)
MAX_WANDB_NAME = 128


def check_wandb_names(logger: dict[str, Any]) -> None:
    """`logger.project` (and entity) as W&B accepts them: no / \\ # ? % :, at most 128 characters."""
    for key in ("project", "entity"):
        value = logger.get(key)
        if value is None and key != "project":
            continue
        text = str(value)
        bad = sorted({c for c in text if c in W_AND_B_FORBIDDEN})
        if not text or bad or len(text) > MAX_WANDB_NAME:
            why = (f"holds {' '.join(bad)}" if bad else "is empty" if not text
                   else f"has {len(text)} characters (at most {MAX_WANDB_NAME})")
            raise ConfigError(f"logger.{key}={text!r} {why}; W&B names take 1-{MAX_WANDB_NAME} characters without "
                              f"{' '.join(W_AND_B_FORBIDDEN)}")


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
    try:
        check_composition(data["batch_composition"], data["batch_size"], data["classes_per_batch"])
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
    given: dict[str, Any] = to_dict(values) if isinstance(values, DictConfig) else dict(values)
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
