"""What reporting costs: W&B offline logging per run, and regenerating tables/figures from a study.

Part 1 times what W&B adds to every run whatever its length: the offline init and the end-of-run hook.
Part 2 trains the same tiny run with `logger=none` and `logger=wandb` (offline), interleaved, in this one
process, and reports the median wall time of each and their ratio. Part 3 builds a synthetic study of
norms x batch sizes x momenta x seeds with Optuna's API and times `table`, `plot` and the offline
`dashboard` on it.

    python -m benchmarks.report_overhead [--repeats 3] [--trials-per-config 5] [--skip-training]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path


def train_once(logger: str, root: Path, i: int) -> float:
    from normbench.config import load_config
    from normbench.train import train

    cfg = load_config(["data=synthetic", "data.num_train=2048", "data.num_test=512", "trainer.max_epochs=2",
                       "trainer.progress_bar=false", "trainer.accelerator=cpu", f"logger={logger}",
                       f"results_dir={root / 'results'}", f"out_dir={root / f'{logger}-{i}'}"])
    t = time.perf_counter()
    train(cfg)
    return time.perf_counter() - t


def part_wandb(repeats: int) -> None:
    os.environ.pop("WANDB_API_KEY", None)
    os.environ.pop("WANDB_MODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["NETRC"] = str(root / "none")
        train_once("none", root, -1)  # warm-up: imports, first-call allocations
        times: dict[str, list[float]] = {"none": [], "wandb": []}
        for i in range(repeats):
            for logger in ("none", "wandb"):
                times[logger].append(train_once(logger, root, i))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"train wall time, median of {repeats} (2 epochs, 2048 synthetic samples, LeNet+BN, CPU):")
    for k, v in times.items():
        print(f"  logger={k:5s}: {med[k]:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in v)})")
    print(f"  wandb/none ratio: {med['wandb'] / med['none']:.2f}  (+{med['wandb'] - med['none']:.2f} s per run)")


def part_wandb_fixed(repeats: int) -> None:
    """The W&B cost that does not scale with training: offline init, and the end-of-run hook + finish."""
    from lightning.pytorch.loggers import WandbLogger

    from normbench.files import write_json_atomic
    from normbench.training.wandb import log_run_end

    os.environ.pop("WANDB_API_KEY", None)
    os.environ.pop("WANDB_MODE", None)
    init, end = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        layers = [{"layer": f"l{i}", "channels": 16, "mean_rel_err": 0.1, "var_log_ratio": 0.0, "kl": 0.01}
                  for i in range(20)]
        write_json_atomic(root / "calibration.json", {"epochs": [{"epoch": e, "layers": layers} for e in range(10)]})
        summary = {"status": "ok", "test_acc": 0.9, "versions": {"torch": "x"}, "history": [], "config": {}}
        for i in range(repeats):
            logger = WandbLogger(project="bench", save_dir=str(root / str(i)), offline=True, settings={"silent": True})
            t = time.perf_counter()
            logger.experiment  # noqa: B018 - starts the run
            init.append(time.perf_counter() - t)
            t = time.perf_counter()
            log_run_end(logger, summary, root)
            end.append(time.perf_counter() - t)
    print(f"W&B fixed cost per run (offline), median of {repeats}: init {statistics.median(init):.2f} s, "
          f"end-of-run hook with a 200-row calibration table + finish {statistics.median(end):.2f} s")


def part_reports(per_config: int) -> None:
    import optuna

    from normbench.cli import main

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    norms, batches, momenta = ["bn", "gn", "ln", "in"], [2, 4, 8, 16, 32, 64], [0.01, 0.1, 0.3]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        (root / "bench").mkdir(parents=True)
        study = optuna.create_study(study_name="bench", storage=f"sqlite:///{root / 'bench' / 'study.db'}")
        trials = []
        for norm in norms:
            for bs in batches:
                for mom in (momenta if norm == "bn" else [None]):
                    for seed in range(per_config):
                        acc = 0.8 + 0.01 * seed - (0.1 / bs if norm == "bn" else 0.0)
                        hist = [{"epoch": e, "test_acc": acc - 0.01 * (3 - e), "test_acc_precise": acc}
                                for e in (1, 2, 3)]
                        summary = {"status": "ok", "test_acc": acc, "acc_gap": 0.02, "examples_per_sec": 1e3 * bs,
                                   "test_acc_precise": acc + 0.01, "calib_kl": 0.1 / bs, "history": hist,
                                   "calib_mean_rel_err": (mom or 0.1) / bs, "git_sha": "0" * 40,
                                   "config": {"norm": norm, "bs": bs, "m": mom}}
                        params = {"norm": norm, "data.batch_size": bs, "norm.momentum": mom, "seed": seed}
                        t = optuna.trial.create_trial(value=acc, user_attrs={"params": params, "summary": summary})
                        t.datetime_complete = dt.datetime(2026, 1, 1)
                        trials.append(t)
        study.add_trials(trials)
        print(f"reports from a study of {len(trials)} trials ({len(trials) // per_config} configurations x "
              f"{per_config} seeds):")
        for cmd in (["table", "table.compare=gn"], ["plot"], ["dashboard", "report.mode=offline"]):
            t = time.perf_counter()
            assert main([cmd[0], "sweep=bench", f"results_dir={root}", *cmd[1:]]) == 0
            print(f"  {cmd[0]:9s}: {time.perf_counter() - t:.2f} s (in-process, imports warm after the first)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials-per-config", type=int, default=5)
    ap.add_argument("--skip-training", action="store_true", help="skip part 1 (the training runs, minutes)")
    a = ap.parse_args()
    part_reports(a.trials_per_config)
    part_wandb_fixed(a.repeats)
    if not a.skip_training:
        part_wandb(a.repeats)
