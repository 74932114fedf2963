"""sync_bn in a 2-process gloo group on CPU equals torch's BatchNorm on the concatenated global batch.

Each spawned rank builds the same global batches (same seed), runs torch's nn.BatchNorm on all of them
and sync_bn on its own slice, and checks forward output, input gradients, parameter gradients (summed
over ranks) and running statistics; a mismatch raises in the rank and fails the test through
torch.multiprocessing.spawn.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from normbench.norms import build_norm
from normbench.norms.sync import SyncBatchNorm, all_reduce_sum, process_group_size
from normbench.run_facts import use_torch_sync_batchnorm

WORLD = 2
# (per-rank sample counts, per-sample shape (C, ...), options): uneven splits, 2D and 4D, EMA and cumulative
CASES = [
    ((3, 5), (4, 3, 3), {"momentum": 0.1}),
    ((4, 4), (6,), {"momentum": None}),
    ((2, 6), (3, 2, 5), {"momentum": 0.3, "affine": False}),
    ((1, 3), (5, 4, 4), {"momentum": 0.1, "eps": 1e-3}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_case(rank: int, sizes: tuple[int, ...], sample_shape: tuple[int, ...], opts: dict) -> None:
    c = sample_shape[0]
    torch.manual_seed(1)  # the same global data and parameters on every rank
    ref_cls = nn.BatchNorm2d if len(sample_shape) == 3 else nn.BatchNorm1d
    ref = ref_cls(c, **opts).double()
    ours = build_norm("sync_bn", c, **opts).double()
    if opts.get("affine", True):
        with torch.no_grad():
            ref.weight.copy_(torch.rand(c) + 0.5)
            ref.bias.copy_(torch.randn(c))
    ours.load_state_dict(ref.state_dict())
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    for step in range(3):
        x = torch.randn(sum(sizes), *sample_shape, dtype=torch.float64) * (step + 1) + 3.0 * step
        g = torch.randn_like(x)
        xr, xo = x.clone().requires_grad_(), x[lo:hi].clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        yr.backward(g)
        yo.backward(g[lo:hi])
        torch.testing.assert_close(yo, yr[lo:hi], msg=f"forward, step {step}")
        torch.testing.assert_close(xo.grad, xr.grad[lo:hi], msg=f"input gradient, step {step}")
        if opts.get("affine", True):
            for name in ("weight", "bias"):
                grad = getattr(ours, name).grad.clone()
                dist.all_reduce(grad)  # DDP sums (then averages) parameter gradients over ranks
                torch.testing.assert_close(grad, getattr(ref, name).grad, msg=f"{name} gradient, step {step}")
                getattr(ours, name).grad = None
                getattr(ref, name).grad = None
        torch.testing.assert_close(ours.running_mean, ref.running_mean, msg=f"running_mean, step {step}")
        torch.testing.assert_close(ours.running_var, ref.running_var, msg=f"running_var, step {step}")
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked)
    ours.eval()
    ref.eval()
    x = torch.randn(sum(sizes), *sample_shape, dtype=torch.float64)
    torch.testing.assert_close(ours(x[lo:hi]), ref(x)[lo:hi], msg="eval")


def check_all_reduce_gradient(rank: int) -> None:
    # Each rank's loss uses the global sum; the gradient of rank r's input is the sum of the ranks' output grads.
    t = torch.full((3,), float(rank + 1), dtype=torch.float64, requires_grad=True)
    s = all_reduce_sum(t)
    torch.testing.assert_close(s.detach(), torch.full((3,), 3.0, dtype=torch.float64))
    (s * (rank + 1)).sum().backward()
    torch.testing.assert_close(t.grad, torch.full((3,), 3.0, dtype=torch.float64))


def worker(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        assert process_group_size() == WORLD
        check_all_reduce_gradient(rank)
        for sizes, sample_shape, opts in CASES:
            check_case(rank, sizes, sample_shape, opts)
    finally:
        dist.destroy_process_group()


def test_sync_bn_two_gloo_ranks_equal_bn_on_global_batch():
    mp.spawn(worker, args=(free_port(),), nprocs=WORLD, join=True)


def test_sync_bn_single_process_is_bn():
    torch.manual_seed(0)
    ref, ours = nn.BatchNorm2d(4).double(), build_norm("sync_bn", 4).double()
    assert isinstance(ours, SyncBatchNorm) and not isinstance(ours, nn.SyncBatchNorm)
    for _ in range(2):
        x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_lightning_converts_to_torch_sync_bn_only_on_multi_gpu():
    assert use_torch_sync_batchnorm("sync_bn", "gpu", 2)
    assert not use_torch_sync_batchnorm("sync_bn", "cpu", 2)
    assert not use_torch_sync_batchnorm("sync_bn", "gpu", 1)
    assert not use_torch_sync_batchnorm("bn", "gpu", 2)
    # the conversion torch/Lightning perform accepts normbench's layer (a _BatchNorm) and keeps its state
    net = nn.Sequential(build_norm("sync_bn", 3, momentum=0.2))
    net[0].running_mean.fill_(0.5)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert type(converted[0]) is nn.SyncBatchNorm
    assert converted[0].momentum == 0.2 and torch.equal(converted[0].running_mean, torch.full((3,), 0.5))


@pytest.mark.parametrize("opts", [{"momentum": 1.5}, {"eps": 0.0}, {"keras_momentum": 2.0}])
def test_sync_bn_bad_options(opts):
    with pytest.raises(ValueError, match=f"norm 'sync_bn'.*{next(iter(opts))}"):
        build_norm("sync_bn", 4, **opts)
