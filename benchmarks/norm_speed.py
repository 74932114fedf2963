"""Forward + backward time of every registered norm relative to torch BatchNorm, ResNet-20 on CPU.

One training step's compute (forward, cross-entropy, backward; no optimizer step) on a batch of 128
3x32x32 images, for a ResNet-20 built with each norm (`gn_ws` includes its weight-standardized convs).
All models live in one process and are timed in interleaved rounds: each round times one step of every
norm, in an order rotated from round to round, and divides each by the `bn` step of the same round, so
that drifts in machine load cancel. The table gives the median over rounds of that ratio (with its
interquartile range) and the median step time.

`sync_bn` runs here without a process group, where it is torch's BatchNorm by design (the all-reduce
path needs several processes); its ratio is a sanity check, not the cost of synchronization.

Usage:
    python -m benchmarks.norm_speed [--rounds 30] [--threads 1] [--batch 128] [--norms bn,gn,...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from normbench.models import build_model
from normbench.norms import available


def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one forward + backward pass."""
    net.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    F.cross_entropy(net(x), y).backward()
    return time.perf_counter() - t0


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first (default 3)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: steadier on a shared machine)")
    parser.add_argument("--norms", default=",".join(available()), help="comma-separated norm names")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.norms.split(",") if n.strip()]
    if "bn" not in names:
        names.insert(0, "bn")
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    nets = {}
    for name in names:
        torch.manual_seed(args.seed)
        nets[name] = build_model("resnet20", name, num_classes=10, in_channels=3, image_size=32).train()
        for _ in range(args.warmup):
            step(nets[name], x, y)

    times: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        this_round = {n: step(nets[n], x, y) for n in order}
        for n in names:
            times[n].append(this_round[n])
            ratios[n].append(this_round[n] / this_round["bn"])

    print(f"ResNet-20, batch {args.batch} x 3x32x32, forward+backward on CPU; torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs")
    print(f"{'norm':<12} {'ratio to bn':>11} {'IQR':>15} {'median ms':>10}")
    for n in sorted(names, key=lambda k: statistics.median(ratios[k])):
        rs = ratios[n]
        iqr = f"{quantile(rs, 0.25):.2f}-{quantile(rs, 0.75):.2f}"
        print(f"{n:<12} {statistics.median(rs):>11.2f} {iqr:>15} {1000 * statistics.median(times[n]):>10.1f}")


if __name__ == "__main__":
    main()
