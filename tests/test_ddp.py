"""Data-parallel training on CPU: BatchLoader sharding, and a 2-process DDP run with sync_bn (and a cosine schedule).

The DDP run (Lightning's `ddp` strategy, gloo, 2 CPU processes) must reproduce a single process with
torch's BatchNorm at twice the per-device batch: every rank draws the same epoch permutation and takes
every second sample of it, so the two ranks' batches of a step are together the single process's batch,
sync_bn normalizes over that union, and DDP averages the two ranks' mean losses' gradients.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from normbench.config import load_config
from normbench.data.memory import BatchLoader
from normbench.train import train
from tests.helpers import TINY, run_cli

REPO = Path(__file__).resolve().parents[1]


def _batches(loader):
    return [y.tolist() for _, y in loader]


def test_ranks_share_out_every_batch_of_the_doubled_batch_size():
    x, y = torch.zeros(40, 1, 2, 2), torch.arange(40)
    single = BatchLoader(x, y, 8, shuffle=True, drop_last=True, seed=3)
    ranks = [BatchLoader(x, y, 4, shuffle=True, drop_last=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(2):  # two epochs: the permutations stay in step
        expected = _batches(single)
        per_rank = [_batches(loader) for loader in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == len(expected) == 5
        for step, batch in enumerate(expected):
            assert per_rank[0][step] == batch[0::2] and per_rank[1][step] == batch[1::2]


def test_distributed_loader_without_process_group_is_unsharded():
    x, y = torch.zeros(10, 1, 2, 2), torch.arange(10)
    loader = BatchLoader(x, y, 4, shuffle=False, drop_last=False, distributed=True)
    assert (loader.rank, loader.world_size, len(loader)) == (0, 1, 3)
    with pytest.raises(ValueError, match="not both"):
        BatchLoader(x, y, 4, shuffle=False, drop_last=False, rank=1, world_size=2, distributed=True)
    with pytest.raises(ValueError, match="rank must be in"):
        BatchLoader(x, y, 4, shuffle=False, drop_last=False, rank=2, world_size=2)


def test_ddp_two_cpu_processes_with_sync_bn_equal_one_process_with_bn(tmp_path):
    common = [o for o in TINY if not o.startswith(("data.num_train", "trainer.max_epochs"))]
    # sigmoid LeNet: smooth enough that float32 rounding differences (reduction order) stay at ~1e-7; with ReLU
    # and batch statistics they grow chaotically within a few steps (in float64 the two runs agree to 1e-15)
    common += ["data.num_train=128", "trainer.max_epochs=2", "model=lenet", "model.act=sigmoid", "optim.lr=0.1"]
    # a decaying schedule spans each rank's steps (its share of the batches), not the unsharded loader's
    common += ["optim.scheduler=cosine", "optim.warmup_steps=2"]
    # no out_dir: the ranks must agree on the default one (one run folder, written by rank 0)
    proc = run_cli("run", *common, "norm=sync_bn", "data.batch_size=16", "trainer.devices=2", "trainer.strategy=ddp",
                   cwd=tmp_path, env={"PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("record: ") == 1  # only rank 0 prints the summary
    assert "sync_dist" not in proc.stderr
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs
    ddp = json.loads((run_dirs[0] / "summary.json").read_text())
    assert ddp["status"] == "ok" and ddp["devices"] == 2 and ddp["norm_batch_size"] == 32
    # each rank iterated its half: 128 samples / (2 ranks x 16) = 4 steps per epoch, 64 samples per epoch
    assert ddp["optimizer_steps"] == ddp["schedule_steps"] == 8 and ddp["train_examples_seen"] == 128

    single = train(load_config([*common, "norm=bn", "data.batch_size=32", f"out_dir={tmp_path / 'single'}"]))
    ref = single.summary
    assert ref["optimizer_steps"] == ref["schedule_steps"] == 8
    assert [h["epoch_lr"] for h in ddp["history"]] == [h["epoch_lr"] for h in ref["history"]]
    for ours, theirs in zip(ddp["history"], ref["history"], strict=True):
        for key in ("train_loss", "test_loss"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key
        for key in ("train_acc", "test_acc"):
            assert ours[key] == pytest.approx(theirs[key], abs=1.5 / 128), key
