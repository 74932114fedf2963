"""Stacked seeds: K seeds of one LeNet configuration trained as one stacked model vs K separate runs.

Side by side in one process, one thread, on real Fashion-MNIST (a fixed training subset), per norm and batch
size (issue 22 item 3; normbench.training.stacked):

    separate    the K seeds one after another, each a plain PyTorch loop (`stacked.separate_run`: what
                `normbench.train` computes for that seed, without Lightning's per-batch cost, so the ratio is
                the stacking's own and a lower bound of what it saves over K normbench runs)
    stacked     the K seeds as one stacked model (`build_stacked` + `StackedTrainer`), the same steps

Speed: training examples/s of all seeds together (K x steps x batch / wall time, model building included),
median over interleaved repeats (the order of the two paths alternates), and the ratio stacked/separate.

Exactness: the same K seeds trained both ways in float64 for `--exact-steps` steps at batch 8: the largest
difference of any parameter or running statistic, relative to that tensor's largest magnitude (rounding is
~1e-16; the test suite asserts < 1e-10 on its tiny runs). Training can amplify rounding: the yardstick column
is the same measure between the separate runs and the separate runs again with their first kernel scaled by
1 + 2^-50 (one float64 ulp), i.e. how far any rounding-level change (another kernel, thread count, machine)
moves the separate runs themselves. Stacking is the same computation when its difference stays at that
yardstick's size. Drift: the same in float32 for `--drift-steps` steps at batch 32, with the largest absolute
and relative parameter difference and each seed's test accuracy both ways.

    python -m benchmarks.stacked_seeds                        # bn, gn, none at batch 8 and 32, 5 seeds
    python -m benchmarks.stacked_seeds --norms bn --repeats 3 --steps 60 --exact-steps 100
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from typing import Any

import torch

from normbench.data import InMemoryData, load_data
from normbench.models import build_model
from normbench.training.stacked import StackedTrainer, build_stacked, check_stackable, seed_accuracies, separate_run

OPTIM = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "norm_weight_decay": 0.0,
         "nesterov": False, "scheduler": "none", "warmup_steps": 0}


def as_dtype(data: InMemoryData, dtype: torch.dtype) -> InMemoryData:
    return InMemoryData(data.name, data.train_x.to(dtype), data.train_y, data.test_x.to(dtype), data.test_y,
                        None, None, data.num_classes, data.source)


def builder(norm: str, dtype: torch.dtype):
    return lambda: build_model("lenet", norm, 10, 1, 28).to(dtype)


def loaders(data: InMemoryData, seeds: list[int], batch: int, norm: str) -> list[Any]:
    # as normbench.train: each seed's own shuffle, the trailing partial batch kept (min 2 samples for BN)
    return [data.loader("train", batch, shuffle=True, seed=s, min_batch=2 if norm == "bn" else 1) for s in seeds]


def run_separate(data: InMemoryData, norm: str, seeds: list[int], batch: int, steps: int,
                 dtype: torch.dtype = torch.float32) -> list[torch.nn.Module]:
    return [separate_run(builder(norm, dtype), ld, s, steps, OPTIM)
            for s, ld in zip(seeds, loaders(data, seeds, batch, norm), strict=True)]


def run_perturbed(data: InMemoryData, norm: str, seeds: list[int], batch: int, steps: int,
                  dtype: torch.dtype = torch.float64) -> list[torch.nn.Module]:
    """The separate runs with each model's first convolution kernel scaled by 1 + 2^-50 at the start."""
    def build() -> torch.nn.Module:
        net = builder(norm, dtype)()
        with torch.no_grad():
            net.get_submodule("features.conv1").weight.mul_(1 + 2**-50)
        return net

    return [separate_run(build, ld, s, steps, OPTIM) for s, ld in zip(seeds, loaders(data, seeds, batch, norm),
                                                                      strict=True)]


class _Models:
    """Separate models behind `seed_state_dict` (what `differences` reads of a stacked model)."""

    def __init__(self, nets: list[torch.nn.Module]) -> None:
        self.nets = nets

    def seed_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return self.nets[k].state_dict()


def run_stacked(data: InMemoryData, norm: str, seeds: list[int], batch: int, steps: int,
                dtype: torch.dtype = torch.float32):
    model = build_stacked(builder(norm, dtype), seeds)
    StackedTrainer(model, OPTIM, total_steps=steps).fit(loaders(data, seeds, batch, norm), max_steps=steps,
                                                        max_epochs=10**6)
    return model


def timed(fn, *args) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def differences(model, nets: list[torch.nn.Module]) -> dict[str, float]:
    """Largest |stacked - separate| over all parameters and running statistics: absolute, and relative to each
    tensor's largest magnitude."""
    worst_abs = worst_rel = worst_param_abs = 0.0
    for k, net in enumerate(nets):
        mine = model.seed_state_dict(k)
        params = {name for name, _ in net.named_parameters()}
        for name, ref in net.state_dict().items():
            if not ref.is_floating_point():
                continue
            diff = float((mine[name].double() - ref.double()).abs().max())
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / max(float(ref.double().abs().max()), 1e-300))
            if name in params:
                worst_param_abs = max(worst_param_abs, diff)
    return {"abs": worst_abs, "rel": worst_rel, "param_abs": worst_param_abs}


def accuracies(nets: list[torch.nn.Module], data: InMemoryData) -> list[float]:
    out = []
    with torch.no_grad():
        for net in nets:
            net.eval()
            correct = sum(int((net(data.test_x[i:i + 1000]).argmax(1) == data.test_y[i:i + 1000]).sum())
                          for i in range(0, len(data.test_x), 1000))
            out.append(correct / len(data.test_x))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--norms", default="bn,gn,none", help="comma-separated")
    p.add_argument("--batch-sizes", default="8,32", help="comma-separated")
    p.add_argument("--seeds", type=int, default=5, help="K: seeds 0..K-1")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--exact-steps", type=int, default=300, help="float64 steps of the exactness check (batch 8)")
    p.add_argument("--drift-steps", type=int, default=300, help="float32 steps of the drift check (batch 32)")
    p.add_argument("--train-subset", type=int, default=4096)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    norms = args.norms.split(",")
    for norm in norms:
        check_stackable("lenet", norm)
    seeds = list(range(args.seeds))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    data = load_data("fashion_mnist", train_subset=args.train_subset, test_subset=args.test_subset)

    speed_rows = []
    for norm in norms:
        for batch in batch_sizes:
            run_stacked(data, norm, seeds, batch, 5)  # warm-up: oneDNN primitives, allocator
            run_separate(data, norm, seeds, batch, 5)
            times: dict[str, list[float]] = {"separate": [], "stacked": []}
            for rep in range(args.repeats):
                order = ("separate", "stacked") if rep % 2 == 0 else ("stacked", "separate")
                for path in order:
                    fn = run_separate if path == "separate" else run_stacked
                    times[path].append(timed(fn, data, norm, seeds, batch, args.steps))
                print(f"{norm} batch {batch} repeat {rep + 1}: " + ", ".join(
                    f"{k} {len(seeds) * args.steps * batch / v[-1]:,.0f}" for k, v in times.items()) + " ex/s",
                    file=sys.stderr, flush=True)
            rate = {k: len(seeds) * args.steps * batch / statistics.median(v) for k, v in times.items()}
            speed_rows.append((norm, batch, rate["separate"], rate["stacked"]))

    check_rows = []
    data64 = as_dtype(data, torch.float64)
    for norm in norms:
        separate64 = run_separate(data64, norm, seeds, 8, args.exact_steps, torch.float64)
        exact = differences(run_stacked(data64, norm, seeds, 8, args.exact_steps, torch.float64), separate64)
        exact["ulp"] = differences(_Models(run_perturbed(data64, norm, seeds, 8, args.exact_steps)), separate64)["rel"]
        stacked = run_stacked(data, norm, seeds, 32, args.drift_steps)
        nets = run_separate(data, norm, seeds, 32, args.drift_steps)
        drift = differences(stacked, nets)
        acc_sep = accuracies(nets, data)
        acc_stk = seed_accuracies(stacked, data.test_x, data.test_y)
        check_rows.append((norm, exact, drift, acc_sep, acc_stk))
        print(f"{norm}: checks done", file=sys.stderr, flush=True)

    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"LeNet on Fashion-MNIST ({len(data.train_x)} train, {len(data.test_x)} test), {len(seeds)} seeds, "
          f"SGD lr {OPTIM['lr']} momentum {OPTIM['momentum']} wd {OPTIM['weight_decay']}")
    print(f"\nTraining examples/s of all {len(seeds)} seeds ({args.steps} steps each), median of {args.repeats} "
          "interleaved repeats")
    print("| norm | batch | separate ex/s | stacked ex/s | stacked / separate |")
    print("|---|---|---|---|---|")
    for norm, batch, sep, stk in speed_rows:
        print(f"| {norm} | {batch} | {sep:,.0f} | {stk:,.0f} | {stk / sep:.2f} |")
    print(f"\nStacked vs separate: float64 after {args.exact_steps} steps at batch 8 (exactness), float32 after "
          f"{args.drift_steps} steps at batch 32 (drift); largest difference over parameters and running statistics")
    print("| norm | float64 max rel | yardstick: 1 ulp | float32 max abs (params) | float32 max rel | "
          "test acc separate | test acc stacked | max abs acc diff |")
    print("|---|---|---|---|---|---|---|---|")
    for norm, exact, drift, acc_sep, acc_stk in check_rows:
        diff = max(abs(a - b) for a, b in zip(acc_sep, acc_stk, strict=True))
        print(f"| {norm} | {exact['rel']:.1e} | {exact['ulp']:.1e} | {drift['param_abs']:.1e} | {drift['rel']:.1e} | "
              f"{' '.join(f'{a:.3f}' for a in acc_sep)} | {' '.join(f'{a:.3f}' for a in acc_stk)} | {diff:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
