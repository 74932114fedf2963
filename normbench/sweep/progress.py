"""One progress line per finished trial: done / total, the trial's result, the best so far, the ETA."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, cast

from optuna.trial import FrozenTrial, TrialState

from normbench.sweep.plan import Plan, point_key
from normbench.sweep.study import FINISHED, final_trials


@dataclass
class Counts:
    done: int
    total: int
    running: int
    failed: int
    pruned: int
    best: FrozenTrial | None
    typical_s: float | None


def count(plan: Plan, trials: list[FrozenTrial]) -> Counts:
    """Progress over the trials that stand for their point (re-queued originals are left out)."""
    spec = plan.spec
    finals = final_trials(trials)
    finished = [t for t in finals if t.state in FINISHED]
    if spec.is_grid:
        wanted = {point_key(p) for p in plan.replicas()}
        total = len(wanted)
        done = len({t.user_attrs.get("point_key") for t in finished} & wanted)
    else:
        # A pruned or failed lead ends its configuration: its other seeds will never be queued.
        ended = sum(1 for t in finished if t.user_attrs.get("lead") and t.state != TrialState.COMPLETE)
        total = plan.total - ended * (len(plan.replicas()) - 1)
        done = len(finished)
    complete = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    best = None
    if complete:
        pick = max if spec.direction == "maximize" else min
        best = pick(complete, key=lambda t: cast(float, t.value))  # not None (filtered above)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished
                 if t.datetime_complete and t.datetime_start]
    return Counts(done=done, total=total, running=sum(t.state == TrialState.RUNNING for t in finals),
                  failed=sum(t.state == TrialState.FAIL for t in finished),
                  pruned=sum(t.state == TrialState.PRUNED for t in finished), best=best,
                  # the median: a worker's first trial also pays for its imports
                  typical_s=statistics.median(durations) if durations else None)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def short_params(params: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def eta(c: Counts, workers: int) -> str:
    remaining = max(0, c.total - c.done)
    if remaining == 0:
        return "done"
    if c.typical_s is None:
        return "ETA ?"
    return f"ETA {format_duration(remaining * c.typical_s / max(1, workers, c.running))}"


def trial_line(plan: Plan, trials: list[FrozenTrial], trial: FrozenTrial, workers: int = 1,
               done: int | None = None) -> str:
    """`[12/42] #11 val_acc=0.8412 (norm=gn data.batch_size=8 seed=1) 12.3s | best ... | ETA ...`.

    `done` replaces the count when several finished trials are reported from one snapshot.
    """
    c = count(plan, trials)
    if done is not None:
        c.done = done
    width = len(str(plan.total))
    objective = plan.spec.objective
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        result = f"{objective}={trial.value:.4f}"
    elif trial.state == TrialState.FAIL:
        result = f"FAIL: {trial.user_attrs.get('fail_reason')}"
    else:
        result = trial.state.name
    seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
               if trial.datetime_complete and trial.datetime_start else 0.0)
    parts = [f"[{c.done:>{width}}/{c.total}] #{trial.number} {result} "
             f"({short_params(trial.user_attrs.get('params', {}))}) {seconds:.1f}s"]
    if c.best is not None:
        parts.append(f"best {objective}={c.best.value:.4f} (#{c.best.number})")
    if c.failed or c.pruned:
        parts.append(f"{c.failed} failed, {c.pruned} pruned")
    parts.append(eta(c, workers))
    return " | ".join(parts)


def final_line(plan: Plan, trials: list[FrozenTrial]) -> str:
    c = count(plan, trials)
    spec = plan.spec
    text = (f"sweep {spec.name}: {c.done}/{c.total} trials done ({c.failed} failed, {c.pruned} pruned, "
            f"{c.running} running elsewhere)")
    if c.best is not None:
        text += (f"; best {spec.objective}={c.best.value:.4f}: trial {c.best.number} "
                 f"({short_params(c.best.user_attrs.get('params', {}))})")
    return text
