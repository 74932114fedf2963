"""Per-trial overhead of a sweep: what the sweep machinery costs beyond the trials' own training.

Runs one tiny 16-trial grid sweep (synthetic data, LeNet, 1 epoch; norm {bn, gn} x batch {16, 32, 64,
128} x seeds {0, 1}) in this process, and the same 16 configs as a bare loop of `train(load_config(...))`
before and after it (their mean is the baseline, which cancels drift in a shared machine's load).
Reports, per trial:

    sweep - bare loop           storage (SQLite) bookkeeping, claiming, heartbeats, trials.csv, progress
    sweep - sum(wall_s)         the above plus composing each trial's config and the sweep's one-time
                                setup (train()'s own wall_s covers data, model, Trainer, fit, evaluation)
    sweep - sum(train + eval)   everything that is not a training step or an evaluation pass: also
                                data loading, model building and the Lightning Trainer

Evaluation time is measured by timing each call of the evaluator's `evaluate` (instrumentation only).

Usage: python -m benchmarks.sweep_overhead [--epochs 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

SWEEP = """\
description: overhead benchmark, 16 tiny trials
base:
  model: lenet
  data: synthetic
  data.num_train: 256
  data.num_test: 128
  data.val_fraction: 0.1
  trainer.max_epochs: {epochs}
  trainer.accelerator: cpu
grid:
  norm: [bn, gn]
  data.batch_size: [16, 32, 64, 128]
seeds: [0, 1]
sampler: grid
objective: val_acc
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared CPU fair)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from normbench.config import config_dir, load_config

    tmp = Path(tempfile.mkdtemp(prefix="normbench-overhead-"))
    shutil.copytree(config_dir(), tmp / "configs")
    (tmp / "configs" / "sweep" / "overhead_tiny.yaml").write_text(SWEEP.format(epochs=args.epochs))
    os.environ["NORMBENCH_CONFIG_DIR"] = str(tmp / "configs")

    import optuna

    from normbench.results import stored_summary
    from normbench.sweep import make_plan, run_sweep
    from normbench.sweep.spec import load_spec
    from normbench.train import train

    results = tmp / "results"
    plan = make_plan(load_spec("overhead_tiny"), [f"results_dir={results}"])
    points = plan.replicas()

    def bare_loop() -> float:
        t0 = time.perf_counter()
        for i, params in enumerate(points):
            ovs = plan.composer.overrides(params, tmp / "bare" / str(i))
            train(load_config(ovs))
        return time.perf_counter() - t0

    import normbench.training.callbacks as callbacks

    evaluate, eval_seconds = callbacks.evaluate, [0.0]

    def timed_evaluate(*a, **kw):
        t = time.perf_counter()
        try:
            return evaluate(*a, **kw)
        finally:
            eval_seconds[0] += time.perf_counter() - t

    callbacks.evaluate = timed_evaluate
    train(load_config(plan.composer.overrides(points[0], tmp / "warmup")))  # imports, first-call caches
    bare1 = bare_loop()
    t0 = time.perf_counter()
    eval_seconds[0] = 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_sweep(["sweep=overhead_tiny", f"results_dir={results}"])
    sweep = time.perf_counter() - t0
    sweep_eval = eval_seconds[0]
    bare2 = bare_loop()
    if code != 0:
        print(f"sweep failed with exit code {code}", file=sys.stderr)
        return 1

    study = optuna.load_study(study_name="overhead_tiny", storage=f"sqlite:///{results / 'overhead_tiny' / 'study.db'}")
    trials = study.get_trials()
    n = len(trials)
    states = {t.state.name for t in trials}
    wall = sum(stored_summary(t.user_attrs)["wall_s"] for t in trials)
    fit = sum(stored_summary(t.user_attrs)["train_time_s"] for t in trials)
    bare = (bare1 + bare2) / 2
    print(f"{n} trials ({', '.join(sorted(states))}), {args.epochs} epoch(s) each, torch threads {args.threads}")
    print(f"  sweep wall time                 {sweep:8.2f} s")
    print(f"  bare loop of train() (mean)     {bare:8.2f} s   (runs: {bare1:.2f}, {bare2:.2f})")
    print(f"  sum of trials' train() wall_s   {wall:8.2f} s")
    print(f"    training steps / evaluation   {fit:8.2f} s / {sweep_eval:.2f} s")
    print(f"  overhead per trial vs bare loop         {(sweep - bare) / n:6.3f} s")
    print(f"  overhead per trial vs wall_s            {(sweep - wall) / n:6.3f} s")
    print(f"  overhead per trial vs training + eval   {(sweep - fit - sweep_eval) / n:6.3f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
