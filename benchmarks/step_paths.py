"""What normbench's two shortcuts around Lightning's per-step dispatch save, side by side in one process.

`Classifier` steps the optimizer directly (`DirectStep`) and calls `loss.backward()` itself (`plain_backward`)
where Lightning's `LightningOptimizer.step` / `manual_backward` would only add hook dispatch. Each path below
is a normal `train(cfg)` run (LeNet-BN, real Fashion-MNIST, one epoch, one thread, no calibration or
checkpoint), with one shortcut switched off; runs are interleaved over repeats and the medians compared:

    both            the default
    lightning step  DirectStep off: LightningOptimizer.step
    lightning bwd   plain backward off: manual_backward

    python -m benchmarks.step_paths                      # batch 2 and 8, 16,384 images, 5 repeats
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from normbench.config import load_config
from normbench.data.memory import raw_data_cache
from normbench.train import train
from normbench.training import module

PATHS = ("both", "lightning step", "lightning bwd")


@contextmanager
def shortcut_off(path: str) -> Iterator[None]:
    """`path`'s shortcut switched off for the runs inside (module-level functions patched back after)."""
    setup, plain = module.DirectStep.setup, module.plain_backward
    if path == "lightning step":
        module.DirectStep.setup = classmethod(lambda cls, trainer, m: None)  # type: ignore[method-assign]
    elif path == "lightning bwd":
        module.plain_backward = lambda trainer, m: False
    try:
        yield
    finally:
        module.DirectStep.setup, module.plain_backward = setup, plain  # type: ignore[method-assign]


def rate(batch_size: int, subset: int, out_dir: str) -> float:
    cfg = load_config(["data=fashion_mnist", f"data.train_subset={subset}", f"data.batch_size={batch_size}",
                       "trainer.max_epochs=1", "optim.lr=0.1", "trainer.threads=1", "trainer.progress_bar=false",
                       "calib.enabled=false", "data.drop_last=true", "trainer.accelerator=cpu",
                       "trainer.checkpoint=false", f"out_dir={out_dir}"])
    return train(cfg).summary["examples_per_sec"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="2,8")
    p.add_argument("--train-subset", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| batch | path | ex/s | us per step saved by the shortcut |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, raw_data_cache():
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            rate(bs, args.train_subset, f"{tmp}/warm{bs}")  # first-call costs outside the comparison
            rates: dict[str, list[float]] = {k: [] for k in PATHS}
            for rep in range(args.repeats):
                for path in PATHS:
                    with shortcut_off(path):
                        rates[path].append(rate(bs, args.train_subset, f"{tmp}/{bs}-{rep}-{path}"))
            med = {k: statistics.median(v) for k, v in rates.items()}
            for path in PATHS:
                saved = "" if path == "both" else f"{(bs / med[path] - bs / med['both']) * 1e6:.0f}"
                print(f"| {bs} | {path} | {med[path]:,.0f} | {saved} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
