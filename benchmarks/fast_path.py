"""The CPU fast path per norm: bf16 autocast, channels-last and torch.compile against float32 eager.

Times one full training step (forward, cross-entropy, backward, SGD step with momentum) of the ResNet workload
(model=resnet_fmnist, depth 8, width 8, 1x28x28 inputs, `norm_act: paper`) for every norm and variant:

    fp32       float32, contiguous, eager (the baseline of each norm)
    cl         float32, channels-last
    bf16       bf16 autocast (torch.autocast("cpu"), as Lightning's bf16-mixed does), norms kept float32
    bf16_cl    bf16 autocast + channels-last
    c_fp32     torch.compile, float32
    c_bf16     torch.compile + bf16 autocast
    c_bf16_cl  torch.compile + bf16 autocast + channels-last

Each variant is prepared exactly as `normbench.train` prepares a run (normbench.training.fast_path:
channels-last model and batches, float32 norm inputs under autocast). All models of one batch size live in one
process and are timed in interleaved rounds (the order rotates each round); the ratio of each variant's step
to its norm's fp32 step in the same round is taken, and the table gives the median over rounds.

A compiled variant counts its compile time against one run of the workload (`--run-examples`, default 3 epochs
of 20,000 images = the resnet_fmnist preset): its effective speedup is
    steps * t_fp32 / (steps * t_variant + compile_s),   steps = run_examples / batch.
Per norm the choice is the variant with the highest geometric-mean effective speedup over the batch sizes among
those at least `--min-gain` (default 1.05) faster at every batch size; none: float32 eager, so no norm is slowed
down. `--write` stores the choices in normbench/training/fast_paths.json (keeping each norm's `verified` block
from the science check when its choice did not change), which `trainer.fast_path=fastest|auto` read.

`--vs-bare` then compares normbench's own run (`train(cfg)`, its examples_per_sec) with a bare PyTorch loop of
the same model, precision and memory format on the same tensors, per norm at its chosen variant.

Usage:
    python -m benchmarks.fast_path [--norms bn,gn,ln,frn,evonorm_b0] [--batches 32,128] [--rounds 15] [--write]
    python -m benchmarks.fast_path --vs-bare-only --norms bn,frn --batches 128
    python -m benchmarks.fast_path --verify-from results/fast_path_check   # after the science check ran
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from normbench.environment import machine
from normbench.models import build_model
from normbench.training.fast_path import EAGER_FP32, FAST_PATHS_FILE, describe, prepare

MODEL = "resnet_fmnist"
MODEL_OPTIONS = {"depth": 8, "width": 8, "norm_act": "paper"}
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "32", "channels_last": False, "compile": False},
    "cl": {"precision": "32", "channels_last": True, "compile": False},
    "bf16": {"precision": "bf16-mixed", "channels_last": False, "compile": False},
    "bf16_cl": {"precision": "bf16-mixed", "channels_last": True, "compile": False},
    "c_fp32": {"precision": "32", "channels_last": False, "compile": True},
    "c_bf16": {"precision": "bf16-mixed", "channels_last": False, "compile": True},
    "c_bf16_cl": {"precision": "bf16-mixed", "channels_last": True, "compile": True},
}


class Stepper:
    """One model prepared as normbench prepares a run with `settings`, and its timed training step."""

    def __init__(self, norm: str, settings: dict[str, Any], seed: int = 0) -> None:
        torch.manual_seed(seed)
        net = build_model(MODEL, norm, num_classes=10, in_channels=1, image_size=28, **MODEL_OPTIONS).train()
        self.bf16 = settings["precision"] == "bf16-mixed"
        self.channels_last = settings["channels_last"]
        self.net = net = prepare(net, settings["precision"], self.channels_last)
        self.forward = torch.compile(net, dynamic=False) if settings["compile"] else net
        self.opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext():
            loss = F.cross_entropy(self.forward(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def measure(norms: list[str], batch: int, rounds: int, variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per norm and variant: median step seconds, median ratio to fp32, the first steps' extra time (compile)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    steppers: dict[tuple[str, str], Stepper] = {}
    warm: dict[tuple[str, str], float] = {}
    for norm in norms:
        for v in variants:
            s = Stepper(norm, VARIANTS[v])
            warm[(norm, v)] = sum(s.step(x, y) for _ in range(3))  # compiles the forward and backward graphs
            steppers[(norm, v)] = s
    keys = list(steppers)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            times[k].append(steppers[k].step(x, y))
    out: dict[str, dict[str, Any]] = {}
    for norm in norms:
        base = times[(norm, "fp32")]
        out[norm] = {}
        for v in variants:
            t = times[(norm, v)]
            step_s = statistics.median(t)
            out[norm][v] = {
                "step_ms": 1000 * step_s,
                "ratio": statistics.median(b / s for b, s in zip(base, t, strict=True)),
                "compile_s": max(0.0, warm[(norm, v)] - 3 * step_s) if VARIANTS[v]["compile"] else 0.0,
            }
    del steppers
    gc.collect()
    return out


def effective(entry: dict[str, Any], batch: int, run_examples: int) -> float:
    """The speedup over one run of the workload, the compile time paid once."""
    steps = run_examples / batch
    t_var = entry["step_ms"] / 1000
    t_fp32 = t_var * entry["ratio"]
    return steps * t_fp32 / (steps * t_var + entry["compile_s"])


def choose(results: dict[int, dict[str, dict[str, Any]]], norm: str, run_examples: int,
           min_gain: float) -> tuple[str, dict[int, float]]:
    best, best_gain, best_speedups = "fp32", 1.0, {b: 1.0 for b in results}
    for v in next(iter(results.values()))[norm]:
        gains = {b: effective(results[b][norm][v], b, run_examples) for b in results}
        if v == "fp32" or min(gains.values()) < min_gain:
            continue
        geo = math.exp(statistics.fmean(math.log(g) for g in gains.values()))
        if geo > best_gain:
            best, best_gain, best_speedups = v, geo, gains
    return best, best_speedups


def bare_vs_normbench(norm: str, settings: dict[str, Any], batch: int, repeats: int, n: int) -> tuple[float, float]:
    """Examples/s of a bare loop and of normbench's train() with the same model, settings and data (median)."""
    from normbench.config import load_config
    from normbench.train import quiet_lightning, train

    quiet_lightning()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    bare, ours = [], []
    for _ in range(repeats):
        gc.collect()
        s = Stepper(norm, settings)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        seconds = 0.0
        for i in range(0, n - batch + 1, batch):
            idx = perm[i:i + batch]
            seconds += s.step(x.index_select(0, idx), y.index_select(0, idx))
        bare.append((n // batch) * batch / seconds)
        gc.collect()
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config([
                f"model={MODEL}", f"norm={norm}", "data=synthetic", f"data.num_train={n}",
                f"data.batch_size={batch}", "optim.lr=0.01", "optim.momentum=0.9", "trainer.max_epochs=1",
                "trainer.threads=1", "logger=none", "trainer.progress_bar=false", "trainer.checkpoint=false",
                f"trainer.precision={settings['precision']}", f"trainer.channels_last={settings['channels_last']}",
                f"trainer.compile={settings['compile']}", f"out_dir={tmp}",
                *[f"model.{k}={v}" for k, v in MODEL_OPTIONS.items()]])
            ours.append(train(cfg).summary["examples_per_sec"])
    return statistics.median(bare), statistics.median(ours)


def write_table(choices: dict[str, dict[str, Any]], header: dict[str, Any], path: Path = FAST_PATHS_FILE) -> None:
    old = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    model_old = old.get("models", {}).get(MODEL, {})
    for norm, entry in choices.items():
        before = model_old.get(norm)
        if before and before.get("verified") and all(before[k] == entry[k] for k in EAGER_FP32):
            entry["verified"] = before["verified"]  # the science check still describes this variant
    models = dict(old.get("models", {}))
    models[MODEL] = {**model_old, **choices}
    path.write_text(json.dumps({**header, "models": models}, indent=1) + "\n")


def verify_from(study_dir: Path, path: Path = FAST_PATHS_FILE) -> list[str]:
    """Copies the science check's verdicts (a committed `fast_path_check` study) into the table: for every
    tested claim comparing one norm's fast variant (`a`) with its float32 eager run (`b`) on an accuracy
    metric, the norm's entry gets `verified` {study, claim, held, margin_pp, difference_pp, ci_pp, n} when
    the variant the study ran is the one the table chooses. Returns one line per norm."""
    from normbench.experiments.spec import load_experiment

    exp = load_experiment(study_dir.name)
    verdicts = {c["id"]: c for c in json.loads((study_dir / "claims.json").read_text())}
    records = [json.loads(line)["summary"] for f in sorted((study_dir / "records").glob("*.jsonl"))
               for line in f.read_text().splitlines() if line.strip()]
    table = json.loads(path.read_text())
    entries = table.get("models", {}).get(MODEL, {})
    lines = []
    for claim in exp.claims:
        test = claim["test"]
        if test.get("kind") != "difference" or test.get("expect") != "equivalent" or "acc" not in test["metric"]:
            continue
        norm = test["a"].get("norm")
        ran = [r for r in records if r["config"]["norm"]["name"] == norm
               and all(_config_value(r["config"], k) == v for k, v in test["a"].items())]
        if not ran or norm not in entries:
            continue
        variant = {k: ran[0]["config"]["trainer"][k] for k in EAGER_FP32}
        chosen = {k: entries[norm][k] for k in EAGER_FP32}
        if variant != chosen:
            lines.append(f"{norm}: the study checked {describe(variant)}, the table chooses {describe(chosen)}: "
                         "not verified")
            entries[norm].pop("verified", None)
            continue
        v = verdicts[claim["id"]]
        entries[norm]["verified"] = {
            "study": study_dir.name, "claim": claim["id"], "held": bool(v["held"]),
            "margin_pp": round(100 * float(test["margin"]), 3), "difference_pp": round(100 * float(v["value"]), 3),
            "ci_pp": [round(100 * float(v["low"]), 3), round(100 * float(v["high"]), 3)], "n": v["n"],
            "p_holm": v.get("p_holm")}
        lines.append(f"{norm}: {describe(variant)}: {v['verdict']} ({v['detail']})")
    path.write_text(json.dumps(table, indent=1) + "\n")
    return lines


def _config_value(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node.get("name") if isinstance(node, dict) else node  # `norm: bn` selects config.norm.name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--norms", default="bn,gn,ln,frn,evonorm_b0")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--run-examples", type=int, default=60_000, help="examples of one run (compile payback)")
    parser.add_argument("--min-gain", type=float, default=1.05)
    parser.add_argument("--write", action="store_true", help="store the choices in normbench/training/fast_paths.json")
    parser.add_argument("--vs-bare", action="store_true", help="then normbench vs a bare loop at the chosen variant")
    parser.add_argument("--vs-bare-only", action="store_true", help="only that, at the table's variant")
    parser.add_argument("--bare-examples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--verify-from", type=Path, default=None,
                        help="copy the verdicts of a committed science check (results/fast_path_check) into the table")
    args = parser.parse_args(argv)
    if args.verify_from is not None:
        for line in verify_from(args.verify_from):
            print(line)
        return

    torch.set_num_threads(args.threads)
    torch._dynamo.config.recompile_limit = 256  # many instances of one model class in one process
    torch._dynamo.config.cache_size_limit = 256
    norms = [n for n in args.norms.split(",") if n]
    batches = [int(b) for b in args.batches.split(",") if b]
    variants = [v for v in args.variants.split(",") if v]
    if "fp32" not in variants:
        variants.insert(0, "fp32")
    cpu = machine().get("cpu_model") or platform.processor() or platform.machine()
    print(f"{MODEL} (depth 8, width 8), training step, torch {torch.__version__}, {args.threads} thread(s), "
          f"{cpu}, {args.rounds} interleaved rounds; speedup over float32 eager of the same norm")
    chosen: dict[str, dict[str, Any]] = {}
    if not args.vs_bare_only:
        results = {b: measure(norms, b, args.rounds, variants) for b in batches}
        for b in batches:
            print(f"\nbatch {b}: median step ratio fp32/variant (effective over one run, compile included)")
            print(f"{'norm':<11} {'fp32 ex/s':>9} " + " ".join(f"{v:>16}" for v in variants))
            for norm in norms:
                r = results[b][norm]
                cells = [f"{r[v]['ratio']:.2f} ({effective(r[v], b, args.run_examples):.2f})" for v in variants]
                print(f"{norm:<11} {b / (r['fp32']['step_ms'] / 1000):>9.0f} " + " ".join(f"{c:>16}" for c in cells))
        print("\nchoice per norm (highest geometric-mean effective speedup, >= "
              f"{args.min_gain} at every batch size, else float32 eager)")
        for norm in norms:
            v, gains = choose(results, norm, args.run_examples, args.min_gain)
            chosen[norm] = {**VARIANTS[v], "speedup": {str(b): round(g, 3) for b, g in gains.items()},
                            "variants": {str(b): {k: {"ratio": round(e["ratio"], 3),
                                                      "compile_s": round(e["compile_s"], 1)}
                                                  for k, e in results[b][norm].items()} for b in batches}}
            shown = ", ".join(f"{g:.2f}x at {b}" for b, g in gains.items())
            print(f"  {norm:<11} {describe(VARIANTS[v]):<40} {shown}")
        if args.write:
            header = {"measured": date.today().isoformat(), "torch": torch.__version__, "cpu": cpu,
                      "threads": args.threads, "run_examples": args.run_examples, "min_gain": args.min_gain,
                      "command": " ".join(["python -m benchmarks.fast_path",
                                           *(argv if argv is not None else sys.argv[1:])])}
            write_table(chosen, header)
            print(f"wrote {FAST_PATHS_FILE}")
    if args.vs_bare or args.vs_bare_only:
        table = chosen or json.loads(FAST_PATHS_FILE.read_text()).get("models", {}).get(MODEL, {})
        print(f"\nnormbench train() vs a bare loop, same model/precision/memory format, {args.bare_examples} "
              f"synthetic examples, median of {args.repeats}")
        for norm in norms:
            settings = {k: table.get(norm, EAGER_FP32)[k] for k in EAGER_FP32}
            for b in batches:
                bare, ours = bare_vs_normbench(norm, settings, b, args.repeats, args.bare_examples)
                print(f"  {norm:<11} batch {b:>4} {describe(settings):<40} bare {bare:8.0f} ex/s  normbench "
                      f"{ours:8.0f} ex/s  ratio {ours / bare:.2f}")


if __name__ == "__main__":
    main()
