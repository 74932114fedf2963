"""`python -m normbench run sweep=NAME [overrides]`: check everything, then run the sweep's trials.

With `sweep.n_workers=1` (default) the trials run in this process; with N > 1 this process starts N
worker processes on the study (their output goes to `<results_dir>/<sweep>/workers/<k>.log`) and
prints the progress it reads from the study. Starting the same command on several machines with one
`sweep.storage=postgresql://...` makes them share the study the same way.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from normbench.config import logger_names, search_path
from normbench.errors import ConfigError, RunFault
from normbench.files import check_output_dir
from normbench.resources import check_count, workers_to_start
from normbench.results import display_url, storage_url, sweep_dir
from normbench.sweep.export import write_trials_csv
from normbench.sweep.multirun import multirun_spec
from normbench.sweep.plan import Plan, make_plan
from normbench.sweep.progress import count, final_line, trial_line
from normbench.sweep.spec import load_spec, split_args
from normbench.sweep.storage import check_storage, mask_password
from normbench.sweep.study import FINISHED, SweepStudy, quiet_optuna
from normbench.sweep.worker import TrialOutcome, Worker


def prepare(args: list[str], multirun: bool = False, allow_oversubscribe: bool = False) -> tuple[Plan, str]:
    """Parses and checks a sweep command line (`run sweep=NAME ...`, or `run -m ...` with `multirun`); nothing
    is written. Returns the plan and storage URL. `allow_oversubscribe`: more workers or threads than
    normbench.resources accepts per core."""
    if multirun:
        spec, run_overrides = multirun_spec(args)
    else:
        name, settings, run_overrides = split_args(args)
        if name is None:
            raise ConfigError("no sweep=NAME given")
        spec = load_spec(name, settings, search_path(run_overrides))
    check_count("sweep.n_workers", spec.n_workers, allow_oversubscribe)
    plan = make_plan(spec, run_overrides)
    check_count("trainer.threads", plan.base_cfg.trainer.threads, allow_oversubscribe)
    if spec.trials_per_device is not None and spec.n_workers > 1:  # more workers than device slots: refused now
        worker_devices(spec.n_workers, spec.trials_per_device, cuda_device_count())
    if spec.study_name is None:
        spec.study_name = default_study_name(plan)
    url = storage_url(plan.results_dir, spec.study, spec.storage)
    mask_password(url)  # before anything (W&B, worker processes) can read sys.argv
    check_output_dir(plan.results_dir, "results_dir")
    check_storage(url, spec.study, spec.storage is not None, sweep_dir(plan.results_dir, spec.study) / "trials")
    return plan, url


def default_study_name(plan: Plan) -> str:
    """The sweep's name; `<sweep>-<dataset>` when the command line trains on another dataset than the sweep file.

    So a smoke run (`sweep=norms_all data=synthetic`) keeps a study of its own beside the real one
    instead of blocking its resume (`sweep.study_name=NAME` chooses any name).
    """
    spec = plan.spec
    if "data" in spec.swept_keys or "data.name" in spec.swept_keys:
        return spec.name
    own = spec.base.get("data") or spec.base.get("data.name")
    if own is None:
        from normbench.config import compose

        own = compose([])["data"]["name"]
    dataset = str(plan.base_cfg.data.name)
    return spec.name if dataset == str(own) else f"{spec.name}-{dataset}"


def describe(plan: Plan, url: str) -> str:
    spec = plan.spec
    dims = " x ".join(f"{d.label}({len(d.values)})" for d in spec.grid)
    seeds = f"seeds({len(spec.seeds)})"
    if spec.is_grid:
        shape = f"grid {dims + ' x ' if dims else ''}{seeds} = {plan.total} trials"
    else:
        keys = ", ".join(s.key for s in spec.space)
        shape = (f"{spec.sampler} over {keys}: {spec.n_configs} configurations x "
                 f"{len(plan.replicas())} replica(s) ({dims + ' x ' if dims else ''}{seeds}), pruner {spec.pruner}")
    study = f" (study {spec.study})" if spec.study != spec.name else ""
    return (f"sweep {spec.name}{study}: {shape}; objective {spec.objective} ({spec.direction}); "
            f"{plan.base_cfg.trainer.threads} torch thread(s) per trial; storage {display_url(url)}")


def report_args(plan: Plan) -> str:
    """The arguments that point the report commands (table, plot, dashboard) at this study."""
    import shlex

    from normbench.paths import config_dir

    spec = plan.spec
    own = not spec.path or Path(spec.path).parent == config_dir() / "sweep"
    words = [f"sweep={spec.name if own else spec.path}"]
    if spec.study != spec.name:
        words.append(f"sweep.study_name={spec.study}")
    if plan.results_dir != "runs/sweeps":
        words.append(f"results_dir={plan.results_dir}")
    if spec.storage:
        words.append(f"sweep.storage={display_url(spec.storage)}")
    return " ".join(shlex.quote(w) for w in words)


def wandb_line(plan: Plan) -> str:
    """Where the trials' W&B runs went (one line for the whole sweep: the trials log quietly)."""
    trials = sweep_dir(plan.results_dir, plan.spec.study) / "trials"
    text = (f"W&B: the trials' runs are in group {plan.base_cfg.logger.group}; `python -m normbench dashboard "
            f"{report_args(plan)}` logs the table and figures as an artifact")
    if any(trials.glob("*/wandb/offline-run-*")):
        text += f"; upload the offline runs with `wandb sync {trials}/*/wandb/offline-run-*`"
    return text


def csv_path(plan: Plan) -> Path:
    return sweep_dir(plan.results_dir, plan.spec.study) / "trials.csv"


def run_sweep(args: list[str], multirun: bool = False, allow_oversubscribe: bool = False) -> int:
    """Runs (or resumes) a sweep (`multirun`: the grid study of a `run -m` command line); returns the process
    exit code. User errors raise ConfigError first."""
    quiet_optuna()
    plan, url = prepare(args, multirun, allow_oversubscribe)
    return run_plan(plan, url)


def run_plan(plan: Plan, url: str) -> int:
    """Runs (or resumes) the trials of a checked plan on storage `url`; returns the process exit code."""
    quiet_optuna()
    spec = plan.spec
    sweep_dir(plan.results_dir, spec.study).mkdir(parents=True, exist_ok=True)
    sweep_study = SweepStudy(plan, url)
    print(describe(plan, url), flush=True)
    for note in sweep_study.notes:
        print(note, flush=True)
    try:
        try:
            code = _run_here(plan, sweep_study) if spec.n_workers == 1 else _run_workers(plan, url, sweep_study)
        except KeyboardInterrupt:
            # The interrupted trials are FAIL (and queued again) by now: trials.csv says so, not RUNNING.
            write_trials_csv(csv_path(plan), sweep_study.trials(), spec.swept_keys)
            raise
        trials = sweep_study.trials()
        write_trials_csv(csv_path(plan), trials, spec.swept_keys)
        print(final_line(plan, trials), flush=True)
        print(f"trials: {csv_path(plan)}", flush=True)
        print(f"tables: python -m normbench table {report_args(plan)}", flush=True)
        if "wandb" in logger_names(plan.base_cfg.logger):
            print(wandb_line(plan), flush=True)
    finally:
        sweep_study.close()
    return code


def _run_here(plan: Plan, sweep_study: SweepStudy) -> int:
    def on_trial_end(outcome: TrialOutcome, trials: list[Any]) -> None:
        write_trials_csv(csv_path(plan), trials, plan.spec.swept_keys)
        trial = next(t for t in trials if t.number == outcome.number)
        print(trial_line(plan, trials, trial), flush=True)

    def on_wait(running: int) -> None:
        print(f"waiting for {running} trial(s) running elsewhere (a dead worker's trial is re-queued once its "
              f"last heartbeat is {plan.spec.effective_grace_period()} s old)", flush=True)

    Worker(sweep_study, on_trial_end=on_trial_end, on_wait=on_wait).run()
    return 0


def worker_devices(n_workers: int, trials_per_device: int | None, n_devices: int) -> list[int | None]:
    """The CUDA device each local worker is pinned to: `trials_per_device` workers per device, in order (worker
    k on device k // trials_per_device). None: not pinned (no `trials_per_device`, or no CUDA device).

    Raises:
        ConfigError: more workers than `trials_per_device` x the devices.
    """
    if trials_per_device is None or n_devices == 0:
        return [None] * n_workers
    if n_workers > trials_per_device * n_devices:
        raise ConfigError(f"sweep.n_workers={n_workers} exceeds sweep.trials_per_device={trials_per_device} x "
                          f"{n_devices} CUDA device(s); accepted: n_workers <= {trials_per_device * n_devices}")
    return [k // trials_per_device for k in range(n_workers)]


def cuda_device_count() -> int:
    """Visible CUDA devices, counted without initializing CUDA in this process (the workers pin theirs)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pin_cuda_device(device: int | None) -> None:
    """Makes this process see only CUDA device `device` (an index into the devices visible so far); before
    anything here initializes CUDA. None: unchanged."""
    if device is None:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d for d in visible.split(",") if d] if visible else None
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[device] if ids else str(device)


def worker_process(plan: Plan, url: str, counter: Any, log_path: str, device: int | None = None) -> None:
    """Entry point of a local worker process (spawned): runs trials quietly, output to its log file.

    Each trial sets its own torch thread count (trainer.threads, in its config). With `device`, the worker
    sees only that CUDA device (set before anything in this process initializes CUDA). A fault ends the
    process with one `error:` line in its log (the coordinator repeats it) and exit code 1.
    """
    pin_cuda_device(device)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    quiet_optuna()
    # The training stack (torch, Lightning and what Lightning imports: torchmetrics, torchvision, dynamo; about
    # 4 s on a CPU) is imported now, before the first claim, so that no trial's time includes it.
    import normbench.train  # noqa: F401
    try:
        sweep_study = SweepStudy(plan, url, setup=False)
        try:
            for outcome in Worker(sweep_study, counter=counter).run():
                print(f"trial {outcome.number}: {outcome.state.name} {outcome.value} {outcome.fail_reason or ''}")
        finally:
            sweep_study.close()
    except (ConfigError, RunFault) as e:
        print(f"error: {e}", flush=True)
        sys.exit(1)


def _error_line(log_path: Path) -> str | None:
    """The last `error:` line a worker wrote to its log."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((line for line in reversed(lines) if line.startswith("error: ")), None)


def worker_count(plan: Plan, sweep_study: SweepStudy) -> int:
    """The worker processes to start: sweep.n_workers, bounded by the trials that can still run (the points
    not finished yet, and sweep.max_trials)."""
    c = count(plan, sweep_study.trials())
    return workers_to_start(plan.spec.n_workers, max(0, c.total - c.done), plan.spec.max_trials)


def _run_workers(plan: Plan, url: str, sweep_study: SweepStudy) -> int:
    import multiprocessing as mp

    spec = plan.spec
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch/SQLAlchemy state
    counter = ctx.Value("i", 0)
    logs = sweep_dir(plan.results_dir, spec.study) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    n_devices = cuda_device_count() if spec.trials_per_device else 0
    devices = worker_devices(spec.n_workers, spec.trials_per_device, n_devices)
    n_workers = worker_count(plan, sweep_study)
    for k in range(n_workers):
        log_path = logs / f"{k}.log"
        p = ctx.Process(target=worker_process, args=(plan, url, counter, str(log_path), devices[k]),
                        name=f"normbench-sweep-{k}")
        p.start()
        procs.append((p, log_path))
    bounded = f" (sweep.n_workers={spec.n_workers}: one per trial that can run)" if n_workers < spec.n_workers else ""
    print(f"{n_workers} worker processes{bounded}; logs in {logs}", flush=True)
    if spec.trials_per_device and n_devices:
        print(f"{spec.trials_per_device} trial(s) per CUDA device: worker k on device k // "
              f"{spec.trials_per_device} of {n_devices}", flush=True)
    elif spec.trials_per_device:
        print("sweep.trials_per_device has no effect here: no CUDA device", flush=True)
    reported = {t.number for t in sweep_study.trials() if t.state in FINISHED}
    try:
        while True:
            alive = any(p.is_alive() for p, _ in procs)
            trials = sweep_study.trials()
            new = [t for t in trials if t.state in FINISHED and t.number not in reported]
            if new:
                write_trials_csv(csv_path(plan), trials, spec.swept_keys)
            done = count(plan, trials).done
            for i, t in enumerate(new):
                reported.add(t.number)
                print(trial_line(plan, trials, t, workers=n_workers, done=done - len(new) + i + 1), flush=True)
            if not alive:
                break
            time.sleep(1.0)
    except (KeyboardInterrupt, RunFault):
        # Ctrl-C: the workers got it too; they re-queue their trials and stop. A storage outage that outlasted
        # the patience here ends theirs too; they stop on their own.
        for p, _ in procs:
            p.join()
        raise
    exits = []
    for p, log_path in procs:
        p.join()
        if p.exitcode != 0:
            exits.append((p.name, p.exitcode, _error_line(log_path), log_path))
    fault, silent = worker_faults(exits)
    if fault is not None:
        raise RunFault(fault)
    for text in silent:
        print(text, file=sys.stderr, flush=True)
    return 1 if silent else 0


def worker_faults(exits: list[tuple[str, int | None, str | None, Path]]) -> tuple[str | None, list[str]]:
    """What the failed workers say, as (the command's one fault line or None, lines for workers that said nothing).

    Args:
        exits: (name, exit code, the `error: ` line of its log or None, its log) of each worker that failed.

    A fault any worker reported is the whole answer: a worker whose log says nothing met the same fault (a full
    disk cannot take its log either), and one line is what the command prints.
    """
    errors = list(dict.fromkeys(line[len("error: "):] for _, _, line, _ in exits if line is not None))
    if errors:
        return "; ".join(errors), []
    return None, [f"worker {name} exited with code {code}; see {log}" for name, code, _, log in exits]
