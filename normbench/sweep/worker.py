"""A sweep worker: claims trials one after another and runs each in this process through train().

Every trial gets its own run directory `<results_dir>/<sweep>/trials/<number>/` (summary.json, logs),
a heartbeat thread while it runs, and ends as COMPLETE (objective value), PRUNED, or FAIL with a
one-line `fail_reason` (diverged, config error, exception); the sweep goes on either way. Ctrl-C
fails the running trial, queues a copy of it for the next run, and stops the worker.
"""

from __future__ import annotations

import contextlib
import gc
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from normbench.errors import ConfigError, RunFault
from normbench.faults import as_fault
from normbench.results import store_summary
from normbench.sweep.plan import command_line, config_id
from normbench.sweep.storage import StorageUnreachable
from normbench.sweep.study import SweepStudy

INTERRUPTED_REASON = "interrupted (Ctrl-C); re-queued"
DROPPED_REASON = "result dropped: the trial was re-queued meanwhile (its heartbeat was stale)"


class Heartbeat:
    """Records the trial's heartbeat every `interval` seconds from a thread, while the trial runs."""

    def __init__(self, sweep_study: SweepStudy, number: int, interval: int):
        self.storage, self.trial_id, self.interval = sweep_study.storage, sweep_study.trial_id(number), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{number}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            # A missed beat is retried at the next interval; a long outage makes the trial stale.
            with contextlib.suppress(Exception):
                self.storage.beat(self.trial_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__


@dataclass
class TrialOutcome:
    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    seconds: float
    fail_reason: str | None = None


def resumable_checkpoint(trial: Any, trials_dir: Path, cfg: Any) -> Path | None:
    """The last.ckpt of the trial that `trial` re-runs (a re-queued copy: user attribute `retry_of`), when it
    exists and was made with the same settings (normbench.training.checkpoint.config_differences); else None."""
    from normbench.config import to_dict
    from normbench.training.checkpoint import LAST, config_differences, nothing_left, read_checkpoint_epochs

    retry_of = trial.user_attrs.get("retry_of")
    if retry_of is None:
        return None
    path = trials_dir / str(retry_of) / LAST
    if not path.is_file():
        return None
    try:
        saved, step, epochs = read_checkpoint_epochs(path)
    except ConfigError:  # a checkpoint cut short by the death of its worker: start over
        return None
    if nothing_left(epochs, step, cfg.trainer.max_epochs, cfg.trainer.max_steps):
        return None  # it died after training (in the measurements): they need the whole run, start over
    return None if config_differences(saved, to_dict(cfg)) else path


@dataclass
class Worker:
    """Runs trials of one sweep until none is left (or `max_trials` ran, counted by `counter`)."""

    sweep_study: SweepStudy
    on_trial_end: Callable[[TrialOutcome, list[FrozenTrial]], None] | None = None
    counter: Any = None  # a multiprocessing Value shared by this command's workers (max_trials)
    on_wait: Callable[[int], None] | None = None  # called when it starts waiting for N running trials
    poll_s: float = 1.0
    outcomes: list[TrialOutcome] = field(default_factory=list)

    def _take_budget(self) -> bool:
        limit = self.sweep_study.spec.max_trials
        if limit is None:
            return True
        if self.counter is None:
            return len(self.outcomes) < limit
        with self.counter.get_lock():
            if self.counter.value >= limit:
                return False
            self.counter.value += 1
            return True

    def run(self) -> list[TrialOutcome]:
        from normbench.data.memory import raw_data_cache

        with raw_data_cache():  # the trials read their dataset's files once per worker, not once per trial
            return self._run()

    def _run(self) -> list[TrialOutcome]:
        first_seen: dict[int, float] = {}
        ss = self.sweep_study
        waiting = False
        while self._take_budget():
            claimed = ss.claim()
            if claimed is not None:
                waiting = False
                self.outcomes.append(self.run_trial(*claimed))
                continue
            if self.counter is not None:
                with self.counter.get_lock():
                    self.counter.value -= 1  # the budget taken above was not used
            pending = self._worth_waiting(first_seen)
            if not pending:
                break
            if not waiting and self.on_wait is not None:
                self.on_wait(pending)
            waiting = True
            time.sleep(self.poll_s)
        return self.outcomes

    def _worth_waiting(self, first_seen: dict[int, float]) -> int:
        """Nothing to claim now: how many RUNNING trials of other workers may still add work.

        A search lead that completes queues its other seeds. A trial whose worker died is re-queued once
        its heartbeat is `grace_period` old, so any RUNNING trial is worth waiting for until then.
        """
        spec = self.sweep_study.spec
        now = time.monotonic()
        patience = spec.effective_grace_period() + 2 * spec.heartbeat_interval
        pending = 0
        for t in self.sweep_study.trials((TrialState.RUNNING,)):
            seen = first_seen.setdefault(t.number, now)
            if t.user_attrs.get("lead") or now - seen < patience:
                pending += 1
        return pending

    def run_trial(self, trial: Any, params: dict[str, Any]) -> TrialOutcome:
        ss = self.sweep_study
        spec = ss.spec
        start = time.perf_counter()
        out_dir = ss.trials_dir / str(trial.number)
        state, value, reason = TrialState.FAIL, None, None
        with Heartbeat(ss, trial.number, spec.heartbeat_interval):
            try:
                try:
                    state, value, reason = self._train(trial, params, out_dir)
                except (KeyboardInterrupt, SystemExit):
                    # Lightning turns Ctrl-C inside fit() into sys.exit(1): both mean "stop", not "bad config".
                    trial.set_user_attr("fail_reason", INTERRUPTED_REASON)
                    ss.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    ss.requeue(trial)
                    raise KeyboardInterrupt from None
                except UpdateFinishedTrialError:
                    raise
                except Exception as e:  # noqa: BLE001 - any failure of one trial is recorded; the sweep goes on
                    fault = as_fault(e)
                    if fault is not None:  # disk full, storage gone: no trial would succeed; stop the sweep
                        self._stop(trial, fault)
                    state, reason = TrialState.FAIL, one_line(e)
                    out_dir.mkdir(parents=True, exist_ok=True)
                    (out_dir / "error.txt").write_text(traceback.format_exc())
                trial.set_user_attr("fail_reason", reason)
                if state == TrialState.COMPLETE:
                    ss.study.tell(trial, value, skip_if_finished=True)
                else:
                    ss.study.tell(trial, state=state, skip_if_finished=True)
            except UpdateFinishedTrialError:
                # Another worker took this trial for lost (no heartbeat for grace_period) and queued a copy;
                # the copy runs the point, so this result is dropped to keep every point exactly once.
                state, value, reason = TrialState.FAIL, None, DROPPED_REASON
        # Lightning's trainer, the module and the callbacks (which hold the dataset tensors) form reference
        # cycles: without a full collection, finished trials' models and data pile up until Python's cyclic
        # collector gets around to them (measured: ~10 trials' worth after 40, growing).
        gc.collect()
        outcome = TrialOutcome(trial.number, state, value, params, time.perf_counter() - start, reason)
        if self.on_trial_end is not None:
            self.on_trial_end(outcome, ss.trials())
        return outcome

    def _stop(self, trial: Any, fault: RunFault) -> None:
        """Ends the sweep on a fault: the trial is failed with the reason and queued again (when the storage
        can still be written), so that a resume runs it; then the fault propagates."""
        if not isinstance(fault, StorageUnreachable):  # unreachable: the trial stays RUNNING, re-queued on resume
            with contextlib.suppress(Exception):
                trial.set_user_attr("fail_reason", f"stopped: {fault}"[:500])
                self.sweep_study.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                self.sweep_study.requeue(trial)
        raise fault from None

    def _train(self, trial: Any, params: dict[str, Any], out_dir: Path) -> tuple[TrialState, float | None, str | None]:
        from normbench.sweep.pruning import PruningCallback
        from normbench.train import train

        ss = self.sweep_study
        spec = ss.spec
        try:
            cfg, overrides = ss.plan.composer.compose(params, out_dir)
        except ConfigError as e:
            return TrialState.FAIL, None, f"config: {e}"
        trial.set_user_attr("command", command_line(overrides))
        resume = resumable_checkpoint(trial, ss.trials_dir, cfg)
        if resume is not None:  # a re-queued trial continues from its dead predecessor's last epoch
            cfg.trainer.ckpt_path = str(resume)
            trial.set_user_attr("resumed_from", str(resume))
        # Searches prune a configuration on its lead trial; its other seeds then run to the end.
        prunable = spec.pruner != "none" and (spec.is_grid or bool(trial.user_attrs.get("lead")))
        pruning = PruningCallback(trial, spec.objective, prune=prunable)
        callbacks: list[Any] = [pruning]
        fields = ss.plan.record_fields.get(config_id(params))
        if fields:
            from normbench.sweep.fixed_fields import FixedFields

            callbacks.append(FixedFields(fields))
        result = train(cfg, callbacks=callbacks)  # finishes its W&B run: the next trial starts a new one
        summary = result.summary
        store_summary(trial, summary, spec.objective)
        if summary.get("status") == "diverged":
            why = summary.get("diverged_reason") or "training loss not finite"
            return TrialState.FAIL, None, f"diverged: {why} at epoch {summary.get('diverged_at_epoch')}"
        if pruning.pruned_at_epoch is not None:
            return TrialState.PRUNED, None, None
        value = summary.get(spec.objective)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return TrialState.FAIL, None, f"objective {spec.objective} is {value!r} in the summary"
        return TrialState.COMPLETE, float(value), None

