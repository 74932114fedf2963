"""Training throughput: normbench's run (eager and compiled) vs a bare hand-written PyTorch loop.

All paths train the same LeNet-BN (built by normbench.models) with SGD on the same in-memory tensors, side by
side in one process, interleaved over repeats; each reports examples/s of one epoch of training steps, the
first epoch included (what a run's `examples_per_sec` reports; evaluation excluded). Per batch size:

    bare            shuffle, index_select, forward, backward, step: the floor
    lightning       a minimal LightningModule (no callbacks, no logger) on the same batches, optimizer steps
                    written out: what Lightning's per-batch loop itself costs
    normbench       `train(cfg)`: its `examples_per_sec` (default trainer.chunk_steps=auto: several optimizer
                    steps per Lightning batch, normbench.training.chunks)
    unchunked       `train(cfg)` with trainer.chunk_steps=1: one optimizer step per Lightning batch
    compiled        `train(cfg)` with trainer.compile=true: the steady-state rate (the steps during which
                    torch compiled are reported apart as compile_s; compiled once per process and shape)

The ratios to the bare loop use the median over repeats. On a shared machine use --repeats 5 or more and read
the spread printed per repeat.

    python -m benchmarks.throughput                              # batch 2, 8, 256; real Fashion-MNIST
    python -m benchmarks.throughput --batch-sizes 8 --train-subset 8192 --no-compile
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F

from normbench.config import load_config
from normbench.data import InMemoryData, load_data
from normbench.models import build_model
from normbench.train import quiet_lightning, train

LR = 0.1  # a rate every batch size trains at without blowing up (the rate does not change the cost)


def bare_loop(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> float:
    """Examples/s of a hand-written loop: shuffle, index, forward, backward, step."""
    gc.collect()  # every path starts without the earlier paths' garbage (Lightning's reference cycles)
    torch.manual_seed(seed)
    net = build_model("lenet", "bn", 10, x.shape[1], x.shape[-1])
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    n_steps = len(x) // batch_size
    net.train()
    t0 = time.perf_counter()
    perm = torch.randperm(len(x), generator=g)
    for i in range(n_steps):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return n_steps * batch_size / (time.perf_counter() - t0)


class _Minimal(L.LightningModule):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers().optimizer  # the raw optimizer: no Lightning wrapper around the step
        loss = F.cross_entropy(self.net(batch[0]), batch[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


class _Clock(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.t0


def lightning_loop(data: InMemoryData, batch_size: int, seed: int) -> float:
    """Examples/s of a minimal Lightning fit over normbench's batches (Lightning's loop, nothing of normbench's)."""
    gc.collect()
    quiet_lightning()
    torch.manual_seed(seed)
    module = _Minimal(build_model("lenet", "bn", 10, data.in_channels, data.image_size))
    clock = _Clock()
    loader = data.loader("train", batch_size, shuffle=True, drop_last=True, seed=seed)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[clock])
    trainer.fit(module, train_dataloaders=loader)
    return len(loader) * batch_size / clock.seconds


def normbench_run(args: argparse.Namespace, batch_size: int, out_dir: str, compiled: bool,
                  chunk_steps: str = "auto") -> dict:
    gc.collect()
    overrides = [f"data={args.data}", f"data.batch_size={batch_size}", "trainer.max_epochs=1", f"optim.lr={LR}",
                 "trainer.accelerator=cpu", "trainer.progress_bar=false", "data.drop_last=true",
                 f"trainer.threads={torch.get_num_threads()}", f"seed={args.seed}", f"out_dir={out_dir}",
                 f"trainer.compile={str(compiled).lower()}", f"trainer.chunk_steps={chunk_steps}"]
    if args.train_subset:  # synthetic data are generated at the requested size instead of subsetted
        key = "data.num_train" if args.data == "synthetic" else "data.train_subset"
        overrides.append(f"{key}={args.train_subset}")
    return train(load_config([*overrides, *args.overrides])).summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--batch-sizes", default="2,8,256", help="comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads of every path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled path")
    p.add_argument("overrides", nargs="*", help="extra normbench overrides for the normbench paths")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.data == "synthetic" and args.train_subset:
        data = load_data("synthetic", num_train=args.train_subset)
    else:
        data = load_data(args.data, train_subset=args.train_subset)
    paths = ["bare", "lightning", "unchunked", "normbench"] + ([] if args.no_compile else ["compiled"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            rates: dict[str, list[float]] = {k: [] for k in paths}
            compile_s: list[float] = []
            if not args.no_compile:  # compile this shape once, outside the timed repeats (reported apart)
                first = normbench_run(args, bs, f"{tmp}/warm{bs}", compiled=True)
                compile_s.append(first["compile_s"])
            for rep in range(args.repeats):
                rates["bare"].append(bare_loop(data.train_x, data.train_y, bs, args.seed))
                rates["lightning"].append(lightning_loop(data, bs, args.seed))
                rates["unchunked"].append(
                    normbench_run(args, bs, f"{tmp}/u{bs}-{rep}", False, chunk_steps="1")["examples_per_sec"])
                rates["normbench"].append(normbench_run(args, bs, f"{tmp}/e{bs}-{rep}", False)["examples_per_sec"])
                if not args.no_compile:
                    s = normbench_run(args, bs, f"{tmp}/c{bs}-{rep}", True)
                    rates["compiled"].append(s["examples_per_sec"])
                print(f"batch {bs} repeat {rep + 1}: " + ", ".join(
                    f"{k} {v[-1]:,.0f}" for k, v in rates.items()) + " ex/s", file=sys.stderr, flush=True)
            med = {k: statistics.median(v) for k, v in rates.items()}
            rows.append((bs, med, compile_s[0] if compile_s else None))

    print(f"device: cpu ({args.threads} thread(s)), data: {args.data} ({len(data.train_x)} train), 1 epoch "
          f"(the first) x {args.repeats} repeats, median examples/s; ratios to the bare loop")
    head = "| batch | bare ex/s | lightning | unchunked | normbench | "
    head += "compiled | compile s |" if "compiled" in paths else ""
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for bs, med, cs in rows:
        cells = [f"{bs}", f"{med['bare']:,.0f}", *(f"{med[k]:,.0f} ({med[k] / med['bare']:.2f})"
                                                    for k in paths[1:])]
        if cs is not None:
            cells.append(f"{cs:.1f}")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
