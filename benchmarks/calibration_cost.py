"""Cost of running-statistics calibration relative to one training epoch of the d2l recipe, on CPU.

Side by side in one process, interleaved over repeats (median of each, then the ratio):
  epoch      one epoch of training steps of the d2l recipe (LeNet-BN, Fashion-MNIST, batch 256, SGD
             lr 1.0): a bare loop of forward, backward and step, without Lightning's overhead, so the
             ratios below are upper bounds for a normbench epoch
  eval       what normbench's EpochEvaluator adds to every epoch anyway (eval-mode train + test passes)
  calib      what `CalibrationMonitor` adds to every measured epoch at default settings
             (calib.samples=8192): deep copy and population pass (train mode, hooks on 4 norm layers)
  precise    the test-set pass with population statistics: once after training by default, at every
             measured epoch with calib.precise_test_every_epoch=true
  final      what it adds once after training besides that: the ECE pass (eval mode) and the
             train_acc_batch and test_acc_batch passes (train mode)
  adabn      the `adabn` test mode, once after training: a population pass over the test set, then a test pass
  weighted   the `weighted` test mode (inference example weighing), once after training, batched
  weighted1  (with --per-example) the same evaluated one example at a time, the fallback for layers whose
             eval arithmetic is not BatchNorm's: what the batched change of variables saves

The calibration figures come from the shipped callback's own methods on the net being trained.

    python -m benchmarks.calibration_cost --threads 1     # real Fashion-MNIST, 3 repeats
    python -m benchmarks.calibration_cost --repeats 5
    python -m benchmarks.calibration_cost --threads 1 --repeats 2 --batch-size 32 --per-example

Both clocks are reported: wall time, and this process's CPU time, which other jobs on a shared
machine do not inflate (exact with --threads 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from normbench.data import load_data
from normbench.metrics import evaluate
from normbench.metrics.test_modes import weighted_evaluate
from normbench.models import build_model
from normbench.training.measurements import CalibrationMonitor


def train_epoch(net, opt, x, y, batch_size: int, g: torch.Generator) -> None:
    net.train()
    perm = torch.randperm(len(x), generator=g)
    for i in range(len(x) // batch_size):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        loss = F.cross_entropy(net(x.index_select(0, idx)), y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `fn()`."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=1024)
    p.add_argument("--samples", type=int, default=8192, help="calib.samples")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-example", action="store_true", help="also time example weighing one example at a time")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_data(args.data)
    torch.manual_seed(args.seed)
    net = build_model("lenet", "bn", data.num_classes, data.in_channels, data.image_size)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    g = torch.Generator().manual_seed(args.seed)
    monitor = CalibrationMonitor(data, args.batch_size, samples=args.samples, eval_batch_size=args.eval_batch_size,
                                 seed=args.seed)

    def eval_passes():
        evaluate(net, data.loader("train", args.eval_batch_size))
        evaluate(net, data.loader("test", args.eval_batch_size))

    def final_passes():
        evaluate(net, data.loader("test", args.eval_batch_size), ece_bins=15)
        monitor.batch_stats_accuracy(net, "train")
        monitor.batch_stats_accuracy(net, "test")

    cal = monitor.measure(net)
    parts = {"epoch": lambda: train_epoch(net, opt, data.train_x, data.train_y, args.batch_size, g),
             "calib": lambda: monitor.measure(net), "precise": lambda: monitor.precise_test(cal, None),
             "eval": eval_passes, "final": final_passes, "adabn": lambda: monitor.adabn_test(net),
             "weighted": lambda: weighted_evaluate(cal.model, monitor._test_batches(), 1 / args.batch_size)}
    if args.per_example:
        parts["weighted1"] = lambda: weighted_evaluate(cal.model, monitor._test_batches(), 1 / args.batch_size,
                                                       check=0)
    wall: dict[str, list[float]] = {k: [] for k in parts}
    cpu: dict[str, list[float]] = {k: [] for k in parts}
    for rep in range(args.repeats):
        for name, fn in parts.items():
            w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {wall[k][-1]:.2f}s wall / {cpu[k][-1]:.2f}s cpu" for k in parts)
              + f"; calib/epoch wall {wall['calib'][-1] / wall['epoch'][-1]:.3f}, "
              f"cpu {cpu['calib'][-1] / cpu['epoch'][-1]:.3f}", file=sys.stderr)
    cal = monitor.measure(net)
    print(f"device: cpu ({torch.get_num_threads()} threads), data: {args.data} ({len(data.train_x)} train, "
          f"{len(data.test_x)} test), batch {args.batch_size}, calib.samples={cal.samples}, "
          f"{args.repeats} repeats (medians; cpu = this process's CPU time, robust to other load)")
    for clock, t in (("wall", wall), ("cpu", cpu)):
        m = {k: statistics.median(v) for k, v in t.items()}
        print(f"[{clock}] training epoch (bare loop) {m['epoch']:.2f} s | EpochEvaluator passes {m['eval']:.2f} s | "
              f"calibration pass {m['calib']:.2f} s | precise test pass {m['precise']:.2f} s | "
              f"ECE + batch-statistics passes {m['final']:.2f} s")
        print(f"[{clock}]   per epoch, default settings          / training epoch : {m['calib'] / m['epoch']:.3f}")
        print(f"[{clock}]   per epoch, precise_test_every_epoch  / training epoch : "
              f"{(m['calib'] + m['precise']) / m['epoch']:.3f}")
        print(f"[{clock}]   once after training (precise + split) / training epoch: "
              f"{(m['precise'] + m['final']) / m['epoch']:.3f}")
        # each test mode against one eval-mode test pass (the precise pass is exactly that)
        modes = [f"{k} {m[k]:.2f} s ({m[k] / m['precise']:.1f}x a test pass)"
                 for k in ("adabn", "weighted", "weighted1") if k in m]
        print(f"[{clock}]   test modes, once after training: {', '.join(modes)}")
    ema_acc = evaluate(net, data.loader("test", args.eval_batch_size)).acc
    precise = monitor.precise_test(cal, ema_acc)
    print(f"(after {args.repeats} epochs: calib_kl {cal.aggregate['calib_kl']:.4f}, "
          f"precise_gain {precise['precise_gain']:+.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
