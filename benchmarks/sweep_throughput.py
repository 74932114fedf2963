"""Sweep efficiency: does a sweep keep every core busy?

Runs a fixed grid sweep (LeNet on a Fashion-MNIST subset, norm {bn, gn} x batch {2, 8, 32, 256}, 1 epoch by default,
one torch thread per trial) with `sweep.n_workers` = the cores, and the same trials as bare hand-written
loops in this process, one after the other: the same model, batches and steps, plus the eval-mode passes
over the training and test sets that a run makes after its epoch. Reports

    efficiency = sweep wall time / (sum of the bare trials' time / workers)

(1.0: the sweep costs nothing beyond the arithmetic spread over the workers). The same bare trials are also
run `workers` at a time in separate processes (each takes the next trial when done, as sweep workers do):
sweep wall / that wall separates normbench's own cost from what the cores lose when they work together
(shared memory bandwidth and caches, clock). Also reported: per trial what the run adds
beyond its own training and evaluation (start-up: data, model, Trainer) and what the sweep adds beyond the
runs (claiming, storage, worker start). The runs' end-of-training measurements are switched off
(`calib.enabled=false`): they are work a bare loop does not do (benchmarks/calibration_cost.py prices them).

    python -m benchmarks.sweep_throughput                       # 2,048 training images, 8 trials
    python -m benchmarks.sweep_throughput --train-subset 60000 --epochs 3   # trials of 10-70 s
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
from datetime import datetime
from pathlib import Path

import torch

NORMS = ("bn", "gn")
BATCHES = (2, 8, 32, 256)
LR = 0.1

SWEEP = """\
description: sweep-throughput benchmark
base:
  model: lenet
  data: {data}
  data.{subset_key}: {subset}
  data.test_subset: {test_subset}
  data.drop_last: true
  optim.lr: {lr}
  trainer.max_epochs: {epochs}
  trainer.accelerator: cpu
  trainer.threads: 1
  trainer.progress_bar: false
  calib.enabled: false
grid:
  norm: [{norms}]
  data.batch_size: [{batches}]
seeds: [0]
sampler: grid
objective: test_acc
"""


def bare_trial(data, norm: str, batch_size: int, eval_batch_size: int, epochs: int = 1) -> float:
    """Seconds of one trial's work done by hand: per epoch, an epoch of steps, then eval passes over train and
    test."""
    from benchmarks.calibration_cost import train_epoch
    from normbench.metrics import evaluate
    from normbench.models import build_model

    t0 = time.perf_counter()
    torch.manual_seed(0)
    net = build_model("lenet", norm, 10, data.in_channels, data.image_size)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train_epoch(net, opt, data.train_x, data.train_y, batch_size, g)
        for split in ("train", "test"):
            evaluate(net, data.loader(split, eval_batch_size))
    return time.perf_counter() - t0


_DATA: dict = {}


def _bare_worker_init(args: argparse.Namespace, eval_batch_size: int) -> None:
    """A process of the concurrent bare loops: one thread, the data loaded, first-call costs paid."""
    torch.set_num_threads(1)
    _DATA["data"], _DATA["eval_batch_size"] = _load(args), eval_batch_size
    bare_trial(_DATA["data"], "bn", 64, eval_batch_size)


def _bare_task(task: tuple[str, int, int]) -> tuple[float, float]:
    norm, b, epochs = task
    start = time.time()
    bare_trial(_DATA["data"], norm, b, _DATA["eval_batch_size"], epochs)
    return start, time.time()


def concurrent_bare(args: argparse.Namespace, eval_batch_size: int) -> float:
    """Wall seconds of the bare trials run `args.workers` at a time (as the sweep runs its trials: each
    process takes the next one when it is done), from the first start to the last end; process start-up
    and data loading are outside. What the cores give when they share memory bandwidth and caches."""
    import multiprocessing as mp

    tasks = [(n, b, args.epochs) for n in NORMS for b in BATCHES]
    with mp.get_context("spawn").Pool(args.workers, initializer=_bare_worker_init,
                                          initargs=(args, eval_batch_size)) as pool:
        spans = list(pool.imap_unordered(_bare_task, tasks, chunksize=1))
    return max(e for _, e in spans) - min(s for s, _ in spans)


def _subset_key(data: str) -> str:
    """The dataset option that sizes the training set: synthetic data are generated at that size."""
    return "num_train" if data == "synthetic" else "train_subset"


def _load(args: argparse.Namespace):
    from normbench.data import load_data

    return load_data(args.data, **{_subset_key(args.data): args.train_subset}, test_subset=args.test_subset)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion_mnist", help="fashion_mnist (real) or synthetic")
    ap.add_argument("--train-subset", type=int, default=2048)
    ap.add_argument("--test-subset", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sweep.n_workers (default: the cores)")
    ap.add_argument("--epochs", type=int, default=1, help="trainer.max_epochs of every trial")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from normbench.config import config_dir, load_config

    tmp = Path(tempfile.mkdtemp(prefix="normbench-sweep-throughput-"))
    shutil.copytree(config_dir(), tmp / "configs")
    subset_key = _subset_key(args.data)
    (tmp / "configs" / "sweep" / "throughput_grid.yaml").write_text(SWEEP.format(
        data=args.data, subset_key=subset_key, subset=args.train_subset, test_subset=args.test_subset, lr=LR,
        epochs=args.epochs,
        norms=", ".join(NORMS), batches=", ".join(map(str, BATCHES))))
    os.environ["NORMBENCH_CONFIG_DIR"] = str(tmp / "configs")

    import optuna

    from normbench.results import stored_summary
    from normbench.sweep import run_sweep

    cfg = load_config([f"data={args.data}", f"data.{subset_key}={args.train_subset}",
                       f"data.test_subset={args.test_subset}"])
    data = _load(args)
    bare_trial(data, "bn", 64, cfg.data.eval_batch_size)  # warm-up: first-call costs are not a trial's work
    bare = {(n, b): bare_trial(data, n, b, cfg.data.eval_batch_size, args.epochs) for n in NORMS for b in BATCHES}
    bare_together = concurrent_bare(args, cfg.data.eval_batch_size)

    results = tmp / "results"
    started = datetime.now()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_sweep(["sweep=throughput_grid", f"results_dir={results}", f"sweep.n_workers={args.workers}"])
    sweep_wall = time.perf_counter() - t0
    if code != 0:
        print(f"sweep failed with exit code {code}", file=sys.stderr)
        return 1
    study = optuna.load_study(study_name="throughput_grid",
                              storage=f"sqlite:///{results / 'throughput_grid' / 'study.db'}")
    trials = study.get_trials()
    records = [stored_summary(t.user_attrs) for t in trials]
    first_start = (min(t.datetime_start for t in trials) - started).total_seconds()
    n = len(records)
    wall = sum(r["wall_s"] for r in records)
    train_s = sum(r["train_time_s"] for r in records)
    bare_total = sum(bare.values())
    eff = sweep_wall / (bare_total / args.workers)
    print(f"{n} trials ({args.data}, {len(data.train_x)} train / {len(data.test_x)} test, {args.epochs} epoch(s), norm "
          f"{{{', '.join(NORMS)}}} x batch {{{', '.join(map(str, BATCHES))}}}), {args.workers} worker(s), "
          f"{os.cpu_count()} cores, 1 thread per trial")
    print(f"  sweep wall time                            {sweep_wall:8.2f} s")
    print(f"  bare trials, one after the other           {bare_total:8.2f} s  "
          f"(/ {args.workers} workers = {bare_total / args.workers:.2f} s)")
    print(f"  efficiency (sweep / (bare / workers))      {eff:8.3f}")
    print(f"  start-up until the first trial started     {first_start:8.2f} s  (planning, worker processes)")
    eff_running = (sweep_wall - first_start) / (bare_total / args.workers)
    print(f"  efficiency without that start-up           {eff_running:8.3f}")
    print(f"  bare trials, {args.workers} at a time (wall)             {bare_together:8.2f} s  "
          f"(the cores together: {bare_total / bare_together:.2f} x one)")
    print(f"  sweep / bare {args.workers} at a time                    {sweep_wall / bare_together:8.3f}  "
          f"(without start-up {(sweep_wall - first_start) / bare_together:.3f})")
    print(f"  sum of the runs' wall_s / training steps   {wall:8.2f} s / {train_s:.2f} s")
    print(f"  per trial: run beyond its bare work        {(wall - bare_total) / n:8.3f} s")
    print(f"  per trial: sweep beyond its runs           {(sweep_wall * args.workers - wall) / n:8.3f} s")
    for (norm, b), s in bare.items():
        rec = next(r for r in records if r["norm"] == norm and r["batch_size"] == b)
        print(f"    {norm:3s} batch {b:3d}: bare {s:6.2f} s, run wall_s {rec['wall_s']:6.2f} s "
              f"(training steps {rec['train_time_s']:.2f} s)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
