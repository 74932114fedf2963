"""Training throughput: normbench's Lightning path vs a bare hand-written PyTorch loop.

Both train the same LeNet-BN (built by normbench.models) with SGD on the same in-memory tensors,
side by side in one process, interleaved over repeats; the ratio of median examples/s is reported.
normbench's figure is its own `examples_per_sec` (training steps only, Lightning loop included,
end-of-epoch evaluation excluded); the bare loop is timed the same way (one epoch of steps).

    python -m benchmarks.throughput                      # real Fashion-MNIST, batch 256, 1 epoch x 3 repeats
    python -m benchmarks.throughput --data synthetic --train-subset 4096
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from normbench.config import load_config
from normbench.data import load_data
from normbench.models import build_model
from normbench.train import train


def bare_loop(x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, seed: int) -> float:
    """Examples/s of a hand-written loop: shuffle, index, forward, backward, step."""
    torch.manual_seed(seed)
    net = build_model("lenet", "bn", 10, x.shape[1], x.shape[-1])
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    g = torch.Generator().manual_seed(seed)
    n_steps = len(x) // batch_size
    seen, seconds = 0, 0.0
    net.train()
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), generator=g)
        for i in range(n_steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(yb)
        seconds += time.perf_counter() - t0
    return seen / seconds


def normbench_path(args: argparse.Namespace, out_dir: str) -> float:
    overrides = [f"data={args.data}", f"data.batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}",
                 "trainer.accelerator=cpu", f"trainer.progress_bar={str(args.progress_bar).lower()}",
                 f"seed={args.seed}", f"out_dir={out_dir}"]
    if args.train_subset:  # synthetic data are generated at the requested size instead of subsetted
        key = "data.num_train" if args.data == "synthetic" else "data.train_subset"
        overrides.append(f"{key}={args.train_subset}")
    overrides += args.overrides
    return train(load_config(overrides)).summary["examples_per_sec"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress-bar", action="store_true", help="show Lightning's progress bar (as a user run does)")
    p.add_argument("overrides", nargs="*", help="extra normbench overrides for the Lightning path")
    args = p.parse_args(argv)

    if args.data == "synthetic" and args.train_subset:
        data = load_data("synthetic", num_train=args.train_subset)
    else:
        data = load_data(args.data, train_subset=args.train_subset)
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            bare.append(bare_loop(data.train_x, data.train_y, args.batch_size, args.epochs, args.seed))
            ours.append(normbench_path(args, f"{tmp}/rep{rep}"))
            print(f"repeat {rep + 1}: bare {bare[-1]:,.0f} ex/s, normbench {ours[-1]:,.0f} ex/s, "
                  f"ratio {ours[-1] / bare[-1]:.3f}", file=sys.stderr)
    mb, mo = statistics.median(bare), statistics.median(ours)
    print(f"device: cpu ({torch.get_num_threads()} threads), data: {args.data} ({len(data.train_x)} train), "
          f"batch {args.batch_size}, {args.epochs} epoch(s) x {args.repeats} repeats")
    print(f"bare PyTorch loop : {mb:10,.0f} examples/s (median)")
    print(f"normbench (Lightning): {mo:10,.0f} examples/s (median)")
    print(f"ratio normbench / bare: {mo / mb:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
