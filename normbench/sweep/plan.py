"""From a sweep spec and the command line to each trial's run config, checked before anything runs.

A trial's config is exactly what `python -m normbench run <overrides>` composes for

    trainer.progress_bar=false  <sweep base>  <command-line overrides>  <sweep additions>  <trial params>
    out_dir=<trial dir>

(sweep additions: with W&B, `logger.group=<study>-<id>`, `logger.job_type=sweep-trial` and the study's name as
a tag (Plan.set_wandb_run, when the study is opened); and `trainer.threads=N` when the thread count was left
null: it changes CPU numbers, so it is resolved once and written into every trial's config), so every
trial can be reproduced with one command (stored as the trial's `command` user attribute).
`make_plan` composes the base config and every grid combination (and the bounds or choices of every
searched distribution) once, so a bad key or value fails with one line before the study is touched.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from normbench import record
from normbench.errors import ConfigError
from normbench.overrides import NEUTRAL_KEYS, differences, format_value
from normbench.sweep.spec import SweepSpec

_NAME_RE = re.compile(r"^[\w.-]+(:[\w.]+)?$")  # a config file name, or a plugin's import path (pkg.mod:Name)



def is_group_key(key: str) -> bool:
    from normbench.config import SECTIONS

    section = SECTIONS.get(key)
    return section is not None and section.group


def format_override(key: str, value: Any) -> str:
    """`key=value` for Hydra; group choices (norm=gn) are written bare, as a user would type them."""
    if is_group_key(key) and isinstance(value, str):
        if not _NAME_RE.match(value):
            raise ConfigError(f"{key}: {value!r} is not a config file name")
        return f"{key}={value}"
    return f"{key}={format_value(value)}"


def read_key(cfg: DictConfig, key: str) -> Any:
    """The value a composed config holds for a swept key (`norm` -> the norm's canonical name)."""
    if is_group_key(key):
        return cfg[key].name
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def stable_hash(obj: Any, length: int = 12) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def config_id(params: dict[str, Any]) -> str:
    """Groups the seeds of one configuration: a stable short hash of the params without the seed."""
    return stable_hash({k: v for k, v in params.items() if k != "seed"})


def point_key(params: dict[str, Any]) -> str:
    """Identifies one trial's point (params with the seed): the exactly-once unit."""
    return stable_hash(params, 16)


def _override_key(text: str) -> str:
    return text.lstrip("+~").split("=", 1)[0]


@dataclass
class TrialComposer:
    """Composes trial configs: base < command line < trial params (see the module docstring)."""

    spec: SweepSpec
    run_overrides: list[str]
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        swept = set(self.spec.swept_keys)
        user_keys = {_override_key(o) for o in self.run_overrides}
        for key in user_keys:
            if key in swept:
                edit = f" (or edit {self.spec.path})" if self.spec.path else ""
                raise ConfigError(f"'{key}' is swept by sweep {self.spec.name}; remove the override{edit}")
            if key == "out_dir":
                raise ConfigError(f"out_dir is set per trial (<results_dir>/{self.spec.study}/trials/<number>); "
                                  "set results_dir instead")
        self.user_keys = user_keys
        self.base_overrides = [format_override(k, v) for k, v in self.spec.base.items() if k not in user_keys]
        self.defaults = [] if "trainer.progress_bar" in user_keys else ["trainer.progress_bar=false"]
        self._composed: dict[str, dict[str, Any]] = {}

    def add_override(self, text: str) -> None:
        """An override the sweep adds after the command line's (e.g. logger.group); replaces one of its key."""
        self.extra = [o for o in self.extra if _override_key(o) != _override_key(text)] + [text]
        self._composed.clear()

    def overrides(self, params: dict[str, Any], out_dir: str | Path | None = None) -> list[str]:
        ovs = [*self.defaults, *self.base_overrides, *self.run_overrides, *self.extra]
        ovs += [format_override(k, v) for k, v in params.items()]
        if out_dir is not None:
            ovs.append(f"out_dir={format_value(str(out_dir))}")
        return ovs

    def compose(self, params: dict[str, Any], out_dir: str | Path | None = None,
                scale_lr: bool = True) -> tuple[DictConfig, list[str]]:
        """The validated run config for `params`, and the overrides that reproduce it.

        Equal to `load_config(overrides)`, but Hydra composes once per choice of config files (the
        group keys among `params`, e.g. norm=gn); value params are then set on a copy, as Hydra's
        `++key=value` would. Composing takes 0.1-0.2 s, a large part of a tiny trial's overhead.
        """
        from normbench.config import compose, validate
        from normbench.run_facts import effective_batch_size

        groups = {k: v for k, v in params.items() if is_group_key(k)}
        cache_key = stable_hash(groups)
        if cache_key not in self._composed:
            self._composed[cache_key] = compose(self.overrides(groups))
        raw = copy.deepcopy(self._composed[cache_key])
        for key, value in params.items():
            if key not in groups:
                _set_dotted(raw, key, value)
        if out_dir is not None:
            raw["out_dir"] = str(out_dir)
        cfg = validate(raw)
        ovs = self.overrides(params, out_dir)
        if self.spec.lr_scaling and scale_lr:
            # Linear scaling rule (Goyal et al. 2017): optim.lr is the rate at base_batch_size.
            base = self.spec.lr_scaling["base_batch_size"]
            effective = effective_batch_size(cfg)
            cfg.optim.lr = float(cfg.optim.lr) * effective / base
            ovs.append(f"optim.lr={format_value(cfg.optim.lr)}")
        return cfg, ovs


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for p in parents:
        child = node.get(p)
        if not isinstance(child, dict):
            child = node[p] = {}
        node = child
    node[leaf] = copy.deepcopy(value)


def command_line(overrides: list[str]) -> str:
    import shlex

    return "python -m normbench run " + " ".join(shlex.quote(o) for o in overrides)


@dataclass
class Plan:
    """What a sweep will run: canonical grid combinations, Optuna distributions, the base config."""

    spec: SweepSpec
    composer: TrialComposer
    base_cfg: DictConfig
    combos: list[dict[str, Any]]
    distributions: dict[str, Any]
    threads_auto: bool = False  # trainer.threads was null: the sweep chose it (a resume adopts the study's)
    # {config_id: fields} added to the run record of each trial of that configuration (e.g. what tuning chose)
    record_fields: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set_wandb_run(self, group: str) -> None:
        """With logger=wandb, every trial's W&B run is in `group` (the study's, unless the command line set
        logger.group), of job type sweep-trial, tagged with the study's name beside the run's own tags."""
        from normbench.config import logger_names

        if "wandb" not in logger_names(self.base_cfg.logger):
            return
        user = self.composer.user_keys
        if "logger.group" not in user:
            self.composer.add_override(f"logger.group={format_value(group)}")
        if "logger.job_type" not in user:
            self.composer.add_override("logger.job_type=sweep-trial")
        tags = list(dict.fromkeys([*self.base_cfg.logger.tags, self.spec.study]))
        self.composer.add_override(f"logger.tags={format_value(tags)}")
        self.base_cfg = _base_config(self.composer)

    def set_threads(self, threads: int) -> None:
        """Every trial runs with `threads` torch threads (trainer.threads, part of each trial's config)."""
        self.composer.add_override(f"trainer.threads={threads}")
        self.base_cfg = _base_config(self.composer)

    @property
    def results_dir(self) -> str:
        return str(self.base_cfg.results_dir)

    def replicas(self, sampled: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every (seed x grid combination) of one configuration; seeds outermost, lead first."""
        sampled = sampled or {}
        return [{**c, **sampled, "seed": s} for s in self.spec.seeds for c in self.combos]

    @property
    def total(self) -> int:
        """Trials when every point runs (a search: n_configs configurations, each with every replica)."""
        n = len(self.replicas())
        return n if self.spec.is_grid else n * int(self.spec.n_configs or 0)

    def base_record(self) -> dict[str, Any]:
        """The parts of the base config that decide a trial's numbers (compared when a study is resumed)."""
        cfg = OmegaConf.to_container(self.base_cfg, resolve=True)
        assert isinstance(cfg, dict)
        # optim.lr stays under lr_scaling: it is the rate at base_batch_size, which every trial's rate scales.
        for key in [*NEUTRAL_KEYS, *self.spec.swept_keys]:
            parts = key.split(".")
            node = cfg
            for p in parts[:-1]:
                node = node.get(p, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(parts[-1], None)
        return cast(dict[str, Any], cfg)  # a DictConfig's container: string keys


def record_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every flattened key that differs."""
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in differences(old, new)]


def explain_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`record_differences`, with a changed group choice first (`data=fashion_mnist -> data=synthetic`) standing
    for the settings of its section that come with the other file (counted, not listed)."""
    diffs = record_differences(old, new)
    changed = [s for s in sorted(set(old) & set(new)) if isinstance(old[s], dict) and isinstance(new[s], dict)
               and old[s].get("name") != new[s].get("name")]
    head = []
    for s in changed:
        n = sum(1 for d in diffs if d.startswith(f"{s}.") and not d.startswith(f"{s}.name:"))
        head.append(f"{s}={old[s].get('name')} -> {s}={new[s].get('name')}"
                    + (f" (and {n} {s}.* setting{'s' if n > 1 else ''} of that choice)" if n else ""))
    return head + [d for d in diffs if d.split(":", 1)[0].split(".", 1)[0] not in changed]


def _base_config(composer: TrialComposer) -> DictConfig:
    """The config every trial starts from, before its params (optim.lr unscaled: the rate at base_batch_size)."""
    return _compose_checked(composer, {}, scale_lr=False)


def _compose_checked(composer: TrialComposer, params: dict[str, Any], scale_lr: bool = True) -> DictConfig:
    try:
        return composer.compose(params, scale_lr=scale_lr)[0]
    except ConfigError as e:
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        raise ConfigError(f"sweep {composer.spec.name} ({shown}): {e}") from None


def make_plan(spec: SweepSpec, run_overrides: list[str]) -> Plan:
    """Composes and checks everything the sweep will run; raises ConfigError (one line) on a problem."""
    from optuna.distributions import CategoricalDistribution

    from normbench.config import check_group_choice, search_path

    composer = TrialComposer(spec, list(run_overrides))
    search = search_path(run_overrides)
    base_cfg = _base_config(composer)
    _check_objective(spec, base_cfg)
    threads_auto = base_cfg.trainer.threads is None
    if threads_auto:  # resolved once, into every trial's config: its stored command then reproduces it
        composer.add_override(f"trainer.threads={default_threads(spec.n_workers)}")
        base_cfg = _base_config(composer)

    first_sample = {s.key: s.probe_values()[0] for s in spec.space}
    combos: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for raw in spec.grid_combinations():
        # unscaled: a swept optim.lr is the rate at lr_scaling's base batch size, which every trial scales itself
        cfg = _compose_checked(composer, {**raw, **first_sample, "seed": spec.seeds[0]}, scale_lr=False)
        # a group's file name (aliases canonical: batch_norm -> bn), not the entry it names: a user file
        # norm/my_norm.yaml with `name: gn` stays my_norm, with its own options
        canonical = {k: check_group_choice(k, v, search) if is_group_key(k) and isinstance(v, str) else read_key(cfg, k)
                     for k, v in raw.items()}
        key = stable_hash(canonical)
        if key in seen:
            raise ConfigError(f"sweep {spec.name}: grid values {seen[key]} and {raw} give the same config")
        seen[key] = raw
        combos.append(canonical)
    for s in spec.space:
        for value in s.probe_values()[1:]:
            _compose_checked(composer, {**combos[0], **first_sample, s.key: value, "seed": spec.seeds[0]})

    distributions: dict[str, Any] = {}
    for d in spec.grid:
        for k in d.keys:
            # a linked value may leave a key unset (e.g. gn beside bn's accumulation_aware): not a param then
            values = list(dict.fromkeys(c[k] for c in combos if k in c))
            distributions[k] = CategoricalDistribution(values)
    for s in spec.space:
        distributions[s.key] = s.distribution()
    return Plan(spec, composer, base_cfg, combos, distributions, threads_auto)


def default_threads(n_workers: int) -> int:
    """Torch threads per trial when trainer.threads is null: this process's torch default (OMP_NUM_THREADS,
    else the physical cores) shared among the sweep's local worker processes."""
    import torch

    return max(1, torch.get_num_threads() // n_workers)


# The objectives a pruner can follow: the record's per-epoch fields measured at every epoch end, not on the test set.
PER_EPOCH = record.PER_EPOCH_OBJECTIVES


def _check_objective(spec: SweepSpec, base_cfg: DictConfig) -> None:
    objective = spec.objective
    if objective not in record.NUMERIC:  # every trial would train, then fail on a value its record never holds
        shown = ", ".join(n for n in record.HEADLINE if n in record.NUMERIC)
        raise ConfigError(f"sweep {spec.name}: objective {objective!r} is not a numeric field of the run record; "
                          f"accepted: {shown}, ... (`python -m normbench.record` lists every field)")
    if objective.startswith("val_") and not base_cfg.data.val_fraction > 0:
        raise ConfigError(f"sweep {spec.name}: objective {objective} needs a validation split; set "
                          "data.val_fraction > 0 (in the sweep's base or on the command line)")
    if spec.pruner != "none" and objective not in PER_EPOCH:
        raise ConfigError(f"sweep {spec.name}: pruner {spec.pruner} reports the objective every epoch; it needs one "
                          f"of {', '.join(PER_EPOCH)} (not the test set), got {objective}")
