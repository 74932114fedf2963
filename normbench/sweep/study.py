"""The Optuna study behind a sweep: storage, exactly-once queueing, claiming, stale-trial re-queueing.

Exactly once, with any number of workers: grid points (and, in a search, the other seeds of a
configuration once its lead trial completed) are enqueued as WAITING trials, each identified by a
`point_key`, under the study lock, skipping keys already present in any state. Workers only claim
WAITING trials (`study.ask()` pops the oldest) or, in a search, sample a new lead while fewer than
`n_configs` exist, again under the lock. Optuna's GridSampler is not used: with several workers it
re-runs cells.

A trial left RUNNING by a dead worker stops getting heartbeats; `fail_stale_trials` marks it FAIL and
Optuna's `RetryHeartbeatStaleTrialCallback` re-queues a copy (same params and point_key, a new number);
the original's number is then in the copy's `retry_history` and it counts as superseded.

User attributes of every trial (the contract with the report commands):
    params     {swept config key as written in the sweep file: value}, seed included
    seed       the trial's seed (a number optuna-dashboard shows and sorts: the seeds of one configuration
               are told apart; the seed is not an Optuna parameter, so samplers never search over it)
    config_id  hash of params without the seed (groups the seeds of one configuration)
    point_key  hash of params with the seed (one grid point)
    run_dir    <results_dir>/<sweep>/trials/<number>/
    summary.0, summary.1, ..., summary_parts
               the run's whole summary.json, as JSON text in parts (COMPLETE trials; also diverged and pruned
               ones); read it with `normbench.results.stored_summary`
    metric.<key>  the headline metrics of the summary as numbers (test_acc, val_acc, the objective, ...)
    fail_reason  one line (FAIL trials; null when COMPLETE or PRUNED; while RUNNING, the reason the trial
               keeps if its worker dies)
    command    the `python -m normbench run ...` line that reproduces the trial

The study's own user attributes: `base_config`, `sweep` (the spec), `wandb_group` (`<study>-<short id>`, the
W&B group of its trials' runs); its metric name is the objective (optuna-dashboard's axis label).
    lead       (search sweeps) true for a sampled configuration's first trial
    retry_of   number of the trial this one re-runs, when re-queued
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from normbench.errors import ConfigError, RunFault
from normbench.models.norm_act import with_legacy_norm_act
from normbench.results import display_url, summary_keys, sweep_dir
from normbench.sweep.locks import driver_url, study_lock
from normbench.sweep.plan import Plan, config_id, explain_differences, point_key
from normbench.sweep.spec import SweepSpec, pruner_class, sampler_class
from normbench.sweep.storage import Retrier, RetryingRDBStorage

WANDB_GROUP_ATTR = "wandb_group"  # the study's W&B group (the online dashboard filters on it)
LOST_WORKER_REASON = ("worker stopped while the trial ran (killed, crashed or lost its heartbeat); "
                      "re-queued as a new trial")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Sweep settings that change what a trial computes (besides the base config): a resume must match them.
COMPUTE_SETTINGS = ("objective", "sampler", "lr_scaling", "pruner", "pruner_options")
# Base-config keys that normbench did not store before it recorded them (studies started earlier lack them).
LEGACY_UNRECORDED = ("trainer.threads", "optim.lr")


def quiet_optuna() -> None:
    """normbench prints its own progress; Optuna's per-trial INFO lines are noise."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def expected_warnings() -> Iterator[None]:
    """Optuna marks its heartbeat API (and metric names) experimental and warns that heartbeats need
    Study.optimize; normbench uses that API on purpose and runs the heartbeat itself around its ask/tell loop."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def open_storage(url: str, spec: SweepSpec, retrier: Retrier | None = None) -> RetryingRDBStorage:
    """RDBStorage with heartbeats and retries through outages (normbench.sweep.storage); stale trials are
    re-queued by RetryHeartbeatStaleTrialCallback."""
    from sqlalchemy.engine import make_url

    shown = display_url(url)
    retrier = retrier or Retrier(url, spec.storage_patience, shown)
    url = driver_url(url)
    parsed = make_url(url)
    sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    engine_kwargs: dict[str, Any] = {}
    if sqlite_file:
        # Several local workers write to one file: wait for the lock instead of failing after 5 s.
        engine_kwargs["connect_args"] = {"timeout": 120}
        _sqlite_wal(Path(str(parsed.database)))
    try:
        with expected_warnings():
            storage = RetryingRDBStorage(
                url, retrier=retrier, engine_kwargs=engine_kwargs,
                heartbeat_interval=spec.heartbeat_interval, grace_period=spec.effective_grace_period(),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
    except RunFault:
        raise
    except Exception as e:  # noqa: BLE001 - driver/connection errors come in many classes
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"sweep {spec.name}: cannot open storage {shown}: {msg}") from None
    if sqlite_file:
        from sqlalchemy import event

        # In WAL mode, synchronous=NORMAL syncs at checkpoints instead of at every commit: a trial's
        # ~10 small commits cost microseconds instead of a disk flush each. A power cut may lose the
        # last commits, never corrupt the file; a lost trial is re-run on resume.
        event.listen(storage.engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=NORMAL"))
        storage.engine.dispose()  # connections opened during setup lacked the pragma
    return storage


def _sqlite_wal(path: Path) -> None:
    """Switches the database file to write-ahead logging (persistent; readers never block the writer)."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=120)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def make_sampler(spec: SweepSpec, seed: int, index: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of lead `index` (a fresh one per lead), seeded `seed`; qmc: point `index` of the scrambled Sobol
    sequence of sampler_seed (normbench.sweep.qmc)."""
    cls = sampler_class(spec.sampler)
    if cls is None:  # grid: every trial is enqueued with all its params; nothing is sampled
        return optuna.samplers.RandomSampler(seed=seed)
    options = dict(spec.sampler_options)
    if spec.sampler == "qmc":
        from normbench.sweep.qmc import LeadQMCSampler

        return LeadQMCSampler({s.key: s.distribution() for s in spec.space}, index, spec.sampler_seed, **options)
    if cls is optuna.samplers.TPESampler:
        options.setdefault("constant_liar", True)  # running trials count as bad guesses: workers spread out
    return cls(seed=seed, **options)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    cls = pruner_class(spec.pruner)
    if cls is None:
        return optuna.pruners.NopPruner()
    return cls(**spec.pruner_options)


def with_norm_weight_decay(old: dict[str, Any]) -> dict[str, Any]:
    """A base record from before `optim.norm_weight_decay` existed states the decay its norms had: weight_decay.

    So a study run without weight decay resumes under the default (0.0), and one run with it says what
    changed instead of silently decaying its norm parameters differently.
    """
    optim = old.get("optim")
    if not isinstance(optim, dict) or "norm_weight_decay" in optim or "weight_decay" not in optim:
        return old
    return {**old, "optim": {**optim, "norm_weight_decay": optim["weight_decay"]}}


def fill_missing(old: dict[str, Any], new: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """A copy of record `old` with each dotted key of `keys` it lacks taken from record `new`."""
    import copy

    out = copy.deepcopy(old)
    src: Any  # a value in `new`: a nested record, or whatever the key leads to
    for key in keys:
        *parents, leaf = key.split(".")
        src, dst = new, out
        for p in parents:
            src, dst = (src or {}).get(p), dst.setdefault(p, {})
        if isinstance(dst, dict) and leaf not in dst and isinstance(src, dict) and leaf in src:
            dst[leaf] = src[leaf]
    return out


def superseded_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-queued (their re-run is another trial)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def final_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that stand for their point: all but those superseded by a re-queued copy."""
    gone = superseded_numbers(trials)
    return [t for t in trials if t.number not in gone]


def suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
    """Registers `key` with Optuna (the enqueued value if the trial was queued with it, else sampled)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")  # pragma: no cover - spec builds only these three


class SweepStudy:
    """One sweep's study and the bookkeeping every worker does on it (all of it under the study lock)."""

    def __init__(self, plan: Plan, url: str, setup: bool = True):
        self.plan, self.spec, self.url = plan, plan.spec, url
        self.trials_dir = sweep_dir(plan.results_dir, self.spec.study) / "trials"
        self.lock = study_lock(url, self.spec.study)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.notes: list[str] = []  # what setup decided that the user should know (printed by the runner)
        self.retrier = Retrier(url, self.spec.storage_patience, display_url(url))
        if hasattr(self.lock, "retry"):  # taking the lock waits out a server outage too
            self.lock.retry = self.retrier.call
        with self.lock:  # also serializes table creation on a fresh database
            self.storage = open_storage(url, self.spec, self.retrier)
            direction = cast(Literal["maximize", "minimize"], self.spec.direction)  # checked by the spec
            self.study = optuna.create_study(
                study_name=self.spec.study, storage=self.storage, direction=direction,
                load_if_exists=True, sampler=make_sampler(self.spec, self.spec.sampler_seed),
                pruner=make_pruner(self.spec))
            try:
                self.study_id = self.storage.get_study_id_from_name(self.spec.study)
                if setup:
                    self._check_and_record()
                    with expected_warnings():  # optuna-dashboard labels the trial values with the objective's name
                        if self.study.metric_names != [self.spec.objective]:
                            self.study.set_metric_names([self.spec.objective])
                    if self.spec.is_grid:
                        self.enqueue(plan.replicas())
                    self._fix_waiting()
            except BaseException:
                self.close()  # a refused resume leaves no open connection (nor SQLite's -wal/-shm files)
                raise

    # -- study-level records ------------------------------------------------------------------------

    def _check_and_record(self) -> None:
        """A resumed study must have been run with the same settings: its numbers would not mix otherwise.

        Compared: the direction, the sweep settings that change what a trial computes (COMPUTE_SETTINGS),
        and the base config (everything but the swept keys and NEUTRAL_KEYS, trainer.threads included).
        With trainer.threads left null, a resume adopts the study's thread count (so another
        sweep.n_workers, or another machine, computes the same numbers).
        """
        attrs = self.study.user_attrs
        where = f"sweep {self.spec.name}: the study {self.spec.study} in {display_url(self.url)}"
        new_study = "use sweep.study_name=NAME (or another results_dir or sweep.storage) for a new study"
        directions = [d.name.lower() for d in self.study.directions]
        if directions != [self.spec.direction]:
            raise ConfigError(f"{where} has direction {directions[0]}, the sweep says {self.spec.direction}; "
                              f"{new_study}")
        if "base_config" in attrs:
            old = attrs.get("sweep", {})
            for key in COMPUTE_SETTINGS:
                if old.get(key) != getattr(self.spec, key):
                    raise ConfigError(f"{where} was run with sweep.{key} {old.get(key)!r}, this run has "
                                      f"{getattr(self.spec, key)!r}; resume with the same setting, or {new_study}")
            old_base = attrs["base_config"]
            old_threads = (old_base.get("trainer") or {}).get("threads")
            legacy = "threads" not in (old_base.get("trainer") or {})
            if self.plan.threads_auto and isinstance(old_threads, int) \
                    and old_threads != self.plan.base_cfg.trainer.threads:
                self.plan.set_threads(old_threads)
                self.notes.append(f"trainer.threads={old_threads}: the thread count this study's trials ran with "
                                  "(results depend on it)")
            if legacy and self.plan.threads_auto:
                raise ConfigError(f"{where} was started before normbench recorded the thread count; resume it with "
                                  "trainer.threads=N, N the torch threads its trials used (max(1, physical cores // "
                                  f"sweep.n_workers) of that run), or {new_study}")
            base = self.plan.base_record()
            if legacy:  # an older normbench did not store these: take them as stated now
                old_base = fill_missing(old_base, base, LEGACY_UNRECORDED)
            old_base = with_legacy_norm_act(with_norm_weight_decay(old_base))
            diffs = explain_differences(old_base, base)
            if diffs:
                shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
                raise ConfigError(f"{where} was run with other settings ({shown}); resume with the same "
                                  f"overrides, or {new_study}")
            if legacy:
                self.study.set_user_attr("base_config", base)
        else:
            self.study.set_user_attr("base_config", self.plan.base_record())
        self.study.set_user_attr("sweep", self.plan.spec.to_record())  # the latest file: table/report settings
        group = attrs.get(WANDB_GROUP_ATTR)
        if not isinstance(group, str):  # one W&B group per study, kept by every resume: <study>-<short id>
            group = f"{self.spec.study}-{uuid.uuid4().hex[:6]}"
            self.study.set_user_attr(WANDB_GROUP_ATTR, group)
        self.plan.set_wandb_run(group)

    # -- queueing -------------------------------------------------------------------------------------

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def optuna_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k in self.plan.distributions}

    def enqueue(self, points: list[dict[str, Any]], **attrs: Any) -> int:
        """Queues the points not yet in the study (in any state); call under the lock. Returns how many."""
        existing = {t.user_attrs.get("point_key") for t in self.trials()}
        added = 0
        for params in points:
            key = point_key(params)
            if key in existing:
                continue
            self.study.enqueue_trial(self.optuna_params(params), user_attrs={
                "params": params, "seed": params["seed"], "config_id": config_id(params), "point_key": key,
                "fail_reason": None, **attrs})
            existing.add(key)
            added += 1
        return added

    def _enqueue_siblings(self) -> None:
        """Search sweeps: every completed lead gets its other seeds (and grid combinations) queued."""
        sampled_keys = [s.key for s in self.spec.space]
        for t in self.trials((TrialState.COMPLETE,)):
            if t.user_attrs.get("lead"):
                sampled = {k: t.user_attrs["params"][k] for k in sampled_keys}
                self.enqueue(self.plan.replicas(sampled)[1:], lead=False)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _set_attr(self, number: int, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id(number), key, value)

    def _fix_waiting(self) -> None:
        """WAITING trials get their own run_dir (re-queued copies carry the original's attributes)."""
        for t in self.trials((TrialState.WAITING,)):
            run_dir = str(self.trials_dir / str(t.number))
            if t.user_attrs.get("run_dir") != run_dir:
                self._set_attr(t.number, "run_dir", run_dir)
            history = t.system_attrs.get("retry_history", [])
            if history and t.user_attrs.get("retry_of") != history[-1]:
                self._set_attr(t.number, "retry_of", history[-1])
                for key in ("fail_reason", "command", "worker", "resumed_from", *summary_keys(t.user_attrs)):
                    if t.user_attrs.get(key) is not None:
                        self._set_attr(t.number, key, None)

    def _n_leads(self) -> int:
        return len({t.user_attrs.get("point_key") for t in self.trials() if t.user_attrs.get("lead")})

    # -- claiming -----------------------------------------------------------------------------------

    def claim(self) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """The next trial for this worker (RUNNING, heartbeat recorded) and its params, or None."""
        with self.lock, expected_warnings():
            # Re-queues trials of dead workers; but right after a storage outage every live worker's heartbeat
            # is old too: wait until theirs have resumed before taking silence for death.
            lag = self.spec.effective_grace_period() + 2 * self.spec.heartbeat_interval
            if not self.storage.recently_recovered(lag):
                optuna.storages.fail_stale_trials(self.study)
            if not self.spec.is_grid:
                self._enqueue_siblings()
            self._fix_waiting()
            if self.trials((TrialState.WAITING,)):
                trial = self.study.ask()
                self.storage.record_heartbeat(self.trial_id(trial.number))
                params = dict(trial.user_attrs["params"])
                for key in self.optuna_params(params):
                    suggest(trial, key, self.plan.distributions[key])
            elif not self.spec.is_grid and self._n_leads() < int(self.spec.n_configs or 0):
                trial, params = self._sample_lead()
            else:
                return None
            run_dir = str(self.trials_dir / str(trial.number))
            if trial.user_attrs.get("run_dir") != run_dir:
                trial.set_user_attr("run_dir", run_dir)
            trial.set_user_attr("worker", self.worker_id)
            # Set now, while the trial can still be written: if this worker dies, the trial is failed
            # by the heartbeat check and keeps this reason. Replaced when the trial finishes.
            trial.set_user_attr("fail_reason", LOST_WORKER_REASON)
            return trial, params

    def _sample_lead(self) -> tuple[optuna.Trial, dict[str, Any]]:
        n = self._n_leads()
        # A fresh sampler per lead, seeded by the lead's index: the same search with 1 or N workers.
        self.study.sampler = make_sampler(self.spec, self.spec.sampler_seed + n, index=n)
        first = self.plan.replicas()[0]
        fixed = self.optuna_params(first)
        if fixed:  # the lead's grid combination is fixed; the searched keys are sampled
            self.study.enqueue_trial(fixed)
        trial = self.study.ask()
        self.storage.record_heartbeat(self.trial_id(trial.number))
        for key in fixed:
            suggest(trial, key, self.plan.distributions[key])
        sampled = {s.key: suggest(trial, s.key, self.plan.distributions[s.key]) for s in self.spec.space}
        params = {**{k: v for k, v in first.items() if k != "seed"}, **sampled, "seed": first["seed"]}
        for key, value in (("params", params), ("seed", params["seed"]), ("config_id", config_id(params)),
                           ("point_key", point_key(params)), ("lead", True)):
            trial.set_user_attr(key, value)
        return trial, params

    def requeue(self, trial: optuna.Trial) -> None:
        """Queues a copy of a trial that was failed for a reason other than its config (interrupt)."""
        frozen = self.storage.get_trial(self.trial_id(trial.number))
        with expected_warnings():
            optuna.storages.RetryHeartbeatStaleTrialCallback()(self.study, frozen)

    def close(self) -> None:
        self.lock.close()
        self.storage.remove_session()
        self.storage.engine.dispose()

