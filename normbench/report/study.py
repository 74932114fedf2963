"""Reading a sweep's stored results: command arguments, the Optuna study, and per-configuration groups.

Reports never re-train: they read the study that the sweep runner wrote (default storage
`sqlite:///<results_dir>/<sweep>/study.db`, see `normbench.results`). Each trial carries user attrs
`params` (swept key -> value, `seed` included), `config_id`, `run_dir`, and for COMPLETE trials the run's
whole summary record (`normbench.results.stored_summary`; FAIL trials: `fail_reason`). A *configuration* is one
assignment of the swept keys other than `seed`; its seeds are the repeated measurements that tables and
figures summarise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from normbench.errors import ConfigError
from normbench.paths import config_dir, is_file_argument
from normbench.report.metrics import metric_value
from normbench.results import (
    check_study_name,
    display_url,
    inspect_sqlite,
    sqlite_path,
    storage_url,
    stored_summary,
    sweep_dir,
)

SEED_KEY = "seed"

# Per-run keys that do not change what a configuration computes: left out of the config hash.
_RUN_LOCAL_KEYS = ("seed", "out_dir", "results_dir", "logger")


@dataclass(frozen=True)
class ReportArgs:
    """What a report command reads and where it writes.

    Attributes:
        sweep: the Optuna study's name (the sweep's, or `sweep.study_name`).
        results_dir: the results root; outputs go to `<results_dir>/<sweep>/`.
        storage: an explicit Optuna storage URL (`sweep.storage=...`), else the default SQLite file.
        options: the command's section options, from the sweep file's section with CLI overrides on top.
        file: the `sweep=` argument whose file gives the sections (a name or a path; None: `sweep`).
    """

    sweep: str
    results_dir: Path
    storage: str | None
    options: dict[str, Any]
    file: str | None = None

    @property
    def storage_url(self) -> str:
        return storage_url(self.results_dir, self.sweep, self.storage)

    @property
    def out_dir(self) -> Path:
        return sweep_dir(self.results_dir, self.sweep)


def parse_report_args(args: list[str], command: str, section: str, accepted: dict[str, Any]) -> ReportArgs:
    """Parses `sweep=NAME|PATH [sweep.study_name=S] [results_dir=DIR] [sweep.storage=URL] [<section>.<key>=VALUE ...]`.

    Values are read as the run config's overrides are (`table.columns=[test_acc,acc_gap]`). The section's
    options start from the sweep file's `<section>:` mapping (configs/sweep/<sweep>.yaml or the file
    sweep=PATH, when it exists) and `accepted` defaults. The study read is `sweep.study_name`, else the sweep's
    name (a multirun's study: `sweep=multirun-...`).

    Raises:
        ConfigError: a malformed or unknown argument, or no sweep name.
    """
    values: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    known = ["sweep", "results_dir", "sweep.storage", "sweep.study_name", *(f"{section}.{k}" for k in accepted)]
    for text in args:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise ConfigError(f"'{command}' takes key=value arguments, got '{text}'; accepted keys: {', '.join(known)}")
        if key not in known:
            raise ConfigError(f"unknown key '{key}' for '{command}'; accepted: {', '.join(known)}")
        value = _parse_value(raw, key)
        if key.startswith(f"{section}."):
            overrides[key.split(".", 1)[1]] = value
        else:
            values[key] = value
    sweep = values.get("sweep")
    if not sweep or not isinstance(sweep, str):
        raise ConfigError(f"'{command}' needs sweep=NAME (the sweep's name, e.g. sweep=bn_vs_gn)")
    options = {**accepted, **sweep_file_section(sweep, section), **overrides}
    unknown = [k for k in options if k not in accepted]
    if unknown:
        shown = sweep_path(sweep) if is_file_argument(sweep) else f"configs/sweep/{sweep}.yaml"
        raise ConfigError(f"unknown key '{section}.{unknown[0]}' in {shown}; "
                          f"accepted: {', '.join(accepted)}")
    results_dir = Path(str(values.get("results_dir") or "runs/sweeps"))
    storage = values.get("sweep.storage")
    if storage is not None:
        check_storage_text(storage)
    given = values.get("sweep.study_name")
    study = str(given or (sweep_path(sweep).stem if is_file_argument(sweep) else sweep))
    check_study_name(study, "sweep.study_name" if given else "sweep")  # the rule `run` applies: no path out
    return ReportArgs(study, results_dir, str(storage) if storage else None, options, file=sweep)


def check_storage_text(storage: Any) -> None:
    """`sweep.storage` of a report command: a database URL (ConfigError otherwise, before anything is read)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(str(storage)) if isinstance(storage, str) else make_url(None)  # type: ignore[arg-type]
    except (ArgumentError, TypeError, AttributeError):
        raise ConfigError(f"sweep.storage={storage!r} is not a database URL (e.g. postgresql://user@host:5432/db, "
                          "sqlite:///path/study.db)") from None


def sweep_path(sweep: str) -> Path:
    """The file of `sweep=`: a path as given, else configs/sweep/<sweep>.yaml (which may not exist)."""
    if is_file_argument(sweep):
        path = Path(sweep).expanduser()
        if not path.is_file():
            raise ConfigError(f"sweep file {path} does not exist")
        return path
    return config_dir() / "sweep" / f"{sweep}.yaml"


def _parse_value(raw: str, key: str) -> Any:
    """A report option's value, read by the one override grammar (normbench.overrides) as the run config's."""
    from normbench.overrides import parse

    if not raw:
        return None
    return parse(f"{key}={raw}").value


def sweep_file_section(sweep: str, section: str) -> dict[str, Any]:
    """The `<section>:` mapping of the sweep's file ({} when there is no file or no section)."""
    from omegaconf import OmegaConf

    path = sweep_path(sweep)
    if not path.is_file():
        return {}
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    part = spec.get(section) if isinstance(spec, dict) else None
    if part is None:
        return {}
    if not isinstance(part, dict):
        raise ConfigError(f"'{section}' in {path} must be a mapping, got {part!r}")
    return dict(part)


def load_study(ref: ReportArgs):
    """Opens the sweep's Optuna study read-only in spirit: never creates a storage file or a study.

    Raises:
        ConfigError: no such storage or study; the message names the sweep and the storage looked in.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = ref.storage_url
    shown = display_url(url)
    hint = (f"run `python -m normbench run sweep={ref.sweep}` first, or point at the results with "
            "results_dir=DIR or sweep.storage=URL")
    path = sqlite_path(url)
    if path is not None:
        # Optuna would create a missing file, or its tables in an empty one: reports only read, so check first.
        if not path.is_file():
            raise ConfigError(f"no results for sweep '{ref.sweep}': storage {shown} does not exist ({hint})")
        if not inspect_sqlite(path):  # a corrupt file raises a RunFault naming it
            raise ConfigError(f"no results for sweep '{ref.sweep}': {path} holds no Optuna study "
                              f"({path.stat().st_size} bytes) ({hint})")
    try:
        names = optuna.study.get_all_study_names(storage=url)
    except Exception as e:  # noqa: BLE001 - driver errors come in many classes; the cause is what matters
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"cannot open storage {shown} for sweep '{ref.sweep}': {msg}") from None
    if ref.sweep not in names:
        found = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"no study '{ref.sweep}' in storage {shown} (studies there: {found}; {hint})")
    return optuna.load_study(study_name=ref.sweep, storage=url)


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial, reduced to what reports use."""

    number: int
    state: str  # COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    params: dict[str, Any]
    summary: dict[str, Any] | None
    fail_reason: str | None
    datetime_complete: datetime | None
    config_id: str | None = None
    run_dir: str | None = None

    @property
    def seed(self) -> Any:
        if SEED_KEY in self.params:
            return self.params[SEED_KEY]
        return (self.summary or {}).get("seed")

    @property
    def outcome(self) -> str:
        """ok | diverged | failed | running | queued | pruned: what the seed column reports for this trial.

        `queued`: WAITING in the study, never started (e.g. beyond a `sweep.max_trials` budget).
        """
        if self.summary is not None and self.summary.get("status") == "diverged":
            return "diverged"  # a sweep records a diverged run as a FAIL trial with its summary
        if self.state == "COMPLETE":
            if self.summary is None:
                return "failed"
            status = self.summary.get("status", "ok")
            return "ok" if status == "ok" else str(status)
        return {"FAIL": "failed", "RUNNING": "running", "WAITING": "queued", "PRUNED": "pruned"}.get(
            self.state, self.state.lower())

    def metric(self, key: str) -> float | None:
        """Metric `key` of an `ok` run (normbench.report.metrics), else None (diverged runs enter no means)."""
        if self.outcome != "ok":
            return None
        return metric_value(self.summary, key)


def read_trials(study) -> list[TrialRecord]:
    """The study's trials as records, by trial number."""
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        attrs = t.user_attrs
        params = attrs.get("params")
        out.append(TrialRecord(
            number=t.number, state=t.state.name, params=dict(params) if isinstance(params, dict) else {},
            summary=stored_summary(attrs),
            fail_reason=attrs.get("fail_reason"), datetime_complete=t.datetime_complete,
            config_id=attrs.get("config_id"), run_dir=attrs.get("run_dir")))
    return out


def sort_key(value: Any) -> tuple:
    """Orders mixed dimension values: null first, then numbers, then strings."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, bool):
        return (2, 0.0, str(value))
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


@dataclass
class ConfigGroup:
    """The trials of one configuration (one value per swept dimension), one chosen trial per seed."""

    values: dict[str, Any]
    by_seed: dict[Any, TrialRecord] = field(default_factory=dict)

    def metric_values(self, key: str) -> list[tuple[Any, float]]:
        """(seed, value) for every seed whose run finished ok and recorded `key`, in seed order."""
        out = []
        for seed in sorted(self.by_seed, key=sort_key):
            v = self.by_seed[seed].metric(key)
            if v is not None:
                out.append((seed, v))
        return out


def _prefer(new: TrialRecord, old: TrialRecord) -> bool:
    """Several trials for one configuration and seed (a retried failure): the finished one, then the latest."""
    rank = {"ok": 3, "diverged": 2}
    return (rank.get(new.outcome, 1), new.number) > (rank.get(old.outcome, 1), old.number)


@dataclass
class SweepResults:
    """A sweep's trials grouped by configuration.

    Attributes:
        sweep: the sweep name.
        trials: every trial, by number.
        dims: the swept keys other than seed, in the order the sweep wrote them.
        seeds: every seed seen in the study: what each configuration is expected to have.
        groups: one per configuration, sorted by dimension values.
    """

    sweep: str
    trials: list[TrialRecord]
    dims: list[str]
    seeds: list[Any]
    groups: list[ConfigGroup]

    @classmethod
    def from_trials(cls, sweep: str, trials: list[TrialRecord]) -> SweepResults:
        dims: list[str] = []
        for t in trials:
            for k in t.params:
                if k != SEED_KEY and k not in dims:
                    dims.append(k)
        seeds = sorted({t.seed for t in trials}, key=sort_key)
        groups: dict[tuple, ConfigGroup] = {}
        for t in trials:
            values = {d: t.params.get(d) for d in dims}
            key = tuple(json.dumps(values[d], sort_keys=True) for d in dims)
            group = groups.setdefault(key, ConfigGroup(values))
            old = group.by_seed.get(t.seed)
            if old is None or _prefer(t, old):
                group.by_seed[t.seed] = t
        ordered = sorted(groups.values(), key=lambda g: tuple(sort_key(g.values[d]) for d in dims))
        return cls(sweep, trials, dims, seeds, ordered)

    def newest_completion(self) -> datetime | None:
        """When the newest finished trial completed: the date reports print (never now())."""
        stamps = [t.datetime_complete for t in self.trials if t.datetime_complete is not None]
        return max(stamps) if stamps else None

    def git_shas(self) -> list[str]:
        """The code versions (short sha, `+dirty` when uncommitted changes) that produced finished runs."""
        shas = set()
        for t in self.trials:
            s = t.summary or {}
            if s.get("git_sha"):
                shas.add(str(s["git_sha"])[:10] + ("+dirty" if s.get("git_dirty") else ""))
        return sorted(shas)

    def config_hash(self) -> str:
        """sha256 (12 hex) of the distinct run configs minus per-run keys (seed, out_dir, results_dir, logger).

        Two tables with the same hash were computed from the same set of configurations. Falls back to the
        swept params when no summary carries a config.
        """
        configs = set()
        for t in self.trials:
            cfg = (t.summary or {}).get("config")
            if isinstance(cfg, dict):
                cfg = {k: v for k, v in cfg.items() if k not in _RUN_LOCAL_KEYS}
            else:
                cfg = {k: v for k, v in t.params.items() if k != SEED_KEY}
            configs.add(json.dumps(cfg, sort_keys=True, separators=(",", ":")))
        text = "\n".join(sorted(configs))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def outcome_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for g in self.groups:
            for seed in self.seeds:
                t = g.by_seed.get(seed)
                outcome = t.outcome if t is not None else "missing"
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def load_results(ref: ReportArgs) -> SweepResults:
    """Opens the study of `ref` and groups its trials (ConfigError when there is nothing to report)."""
    study = load_study(ref)
    trials = read_trials(study)
    if not trials:
        raise ConfigError(f"study '{ref.sweep}' in storage {display_url(ref.storage_url)} has no trials yet")
    return SweepResults.from_trials(ref.sweep, trials)
