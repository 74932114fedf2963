"""Stacked seeds (normbench.training.stacked): the stacked run is the K separate runs' computation.

The reference is a plain PyTorch loop per seed, built and fed as `normbench.train` builds and feeds a run
(`test_reference_loop_is_a_normbench_run` proves that for one seed, bit for bit); in float64 the stacked run
must agree with it to rounding over hundreds of steps, parameters and running statistics alike.
"""

from __future__ import annotations

import pytest
import torch

from normbench.config import load_config
from normbench.data import load_data
from normbench.data.memory import InMemoryData
from normbench.errors import ConfigError
from normbench.models import build_model
from normbench.norms import norm_factory
from normbench.train import train
from normbench.training.stacked import (
    StackedModel,
    StackedTrainer,
    build_stacked,
    check_stackable,
    seed_accuracies,
    separate_run,
)
from tests.helpers import TINY

SEEDS = (0, 1, 2)
BATCH = 8
# 500 samples: 62 batches of 8 and a trailing batch of 4 per epoch (the partial batch stacks too)
N_TRAIN = 500
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "norm_weight_decay": 0.0,
       "nesterov": False, "scheduler": "cosine", "warmup_steps": 10}


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread (after conftest's two): float32 kernels sum in a thread-count-dependent order, and the runs
    compared bit for bit below (`trainer.threads=1`) must share it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data() -> InMemoryData:
    return load_data("synthetic", num_train=N_TRAIN, num_test=128)


def builder(norm: str, dtype: torch.dtype, **options):
    def build() -> torch.nn.Module:
        return build_model("lenet", norm_factory(norm, **options), 10, 1, 28).to(dtype)
    return build


def loader(data: InMemoryData, seed: int, dtype: torch.dtype, norm: str):
    x = data.train_x.to(dtype)
    batch_stats = norm.startswith("bn")
    return InMemoryData(data.name, x, data.train_y, data.test_x, data.test_y, None, None, 10, "").loader(
        "train", BATCH, shuffle=True, seed=seed, min_batch=2 if batch_stats else 1)


def separate(build, data, seed: int, steps: int, optim: dict, dtype: torch.dtype, norm: str) -> torch.nn.Module:
    return separate_run(build, loader(data, seed, dtype, norm), seed, steps, optim)


def stacked_run(build, data, steps: int, optim: dict, dtype: torch.dtype, norm: str) -> StackedModel:
    model = build_stacked(build, SEEDS)
    trainer = StackedTrainer(model, optim, total_steps=steps)
    made = trainer.fit([loader(data, s, dtype, norm) for s in SEEDS], max_steps=steps, max_epochs=100)
    assert made == steps
    return model


def worst_relative_difference(model: StackedModel, separate: list[torch.nn.Module]) -> float:
    worst = 0.0
    for k, net in enumerate(separate):
        mine = model.seed_state_dict(k)
        for name, ref in net.state_dict().items():
            assert mine[name].shape == ref.shape, name
            if not ref.is_floating_point():  # num_batches_tracked
                assert torch.equal(mine[name], ref), name
                continue
            scale = ref.abs().max().clamp_min(1e-30)
            worst = max(worst, float((mine[name] - ref).abs().max() / scale))
    return worst


@pytest.mark.parametrize(("norm", "options", "optim", "steps"), [
    ("bn", {}, SGD, 300),
    ("bn", {"momentum": None}, {**SGD, "nesterov": True, "scheduler": "none", "warmup_steps": 0}, 100),
    ("gn", {}, SGD, 200),
    ("ln", {}, {**SGD, "norm_weight_decay": 1e-3}, 100),
    ("none", {}, {**SGD, "name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "norm_weight_decay": None}, 100),
])
def test_stacked_equals_separate_runs_in_float64(data, norm, options, optim, steps):
    build = builder(norm, torch.float64, **options)
    runs = [separate(build, data, s, steps, optim, torch.float64, norm) for s in SEEDS]
    model = stacked_run(build, data, steps, optim, torch.float64, norm)
    assert worst_relative_difference(model, runs) < 1e-10
    # the seeds are distinct runs that trained (a stack of one run copied K times, or no training, would not do)
    first = [net.state_dict()["features.conv1.weight"] for net in runs]
    torch.manual_seed(SEEDS[0])
    assert not torch.equal(first[0], build().state_dict()["features.conv1.weight"])
    assert not torch.allclose(first[0], first[1])
    if norm == "bn":
        means = [model.seed_state_dict(k)["features.norm2.running_mean"] for k in range(len(SEEDS))]
        assert not torch.allclose(means[0], means[1]) and means[0].abs().max() > 0


def test_seeds_start_as_their_separate_runs_and_unstack(data):
    build = builder("bn", torch.float32)
    model = build_stacked(build, SEEDS)
    for k, seed in enumerate(SEEDS):
        torch.manual_seed(seed)
        reference = build().state_dict()
        own = model.seed_state_dict(k)
        assert own.keys() == reference.keys()
        assert all(torch.equal(own[name], reference[name]) for name in reference)
    # one step, then each unstacked model holds its seed's state and evaluates as the stacked model does
    trainer = StackedTrainer(model, {**SGD, "scheduler": "none"})
    trainer.fit([loader(data, s, torch.float32, "bn") for s in SEEDS], max_steps=5)
    nets = model.unstack()
    accuracies = seed_accuracies(model, data.test_x, data.test_y, batch_size=50)
    for k, net in enumerate(nets):
        assert all(torch.equal(v, model.seed_state_dict(k)[name]) for name, v in net.state_dict().items())
        net.eval()
        with torch.no_grad():
            own = (net(data.test_x).argmax(1) == data.test_y).double().mean().item()
        assert own == pytest.approx(accuracies[k], abs=1.5 / len(data.test_y))  # float32 rounding may flip one


def test_reference_loop_is_a_normbench_run(data, tmp_path):
    """The per-seed loop above is what `normbench.train` does for that seed: same model, order, steps."""
    cfg = load_config([*TINY, f"data.num_train={N_TRAIN}", f"data.batch_size={BATCH}", "seed=1",
                       "optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=5e-4", "optim.scheduler=cosine",
                       "optim.warmup_steps=10", "trainer.max_steps=40", "trainer.checkpoint=false",
                       "trainer.threads=1", f"out_dir={tmp_path / 'run'}"])
    result = train(cfg)
    steps = result.summary["optimizer_steps"]
    assert steps == 40
    reference = separate(builder("bn", torch.float32), data, 1, steps, SGD, torch.float32, "bn")
    trained = result.module.net.state_dict()
    diffs = {name: float((trained[name].double() - v.double()).abs().max())
             for name, v in reference.state_dict().items()}
    assert max(diffs.values()) == 0, diffs


@pytest.mark.parametrize(("model", "norm", "options", "needle"), [
    ("resnet20", "bn", {}, "model=resnet20"),
    ("lenet", "frn", {}, "norm=frn"),
    ("lenet", "bn", {"accumulation_aware": True}, "accumulation_aware"),
])
def test_unstackable_configurations_are_refused(model, norm, options, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        check_stackable(model, norm, options)
    assert "accepted" in str(info.value)


def test_a_model_with_an_unstackable_layer_is_refused():
    with pytest.raises(ConfigError, match=r"features\.norm1 \(InstanceNorm\) cannot be stacked"):
        build_stacked(builder("in", torch.float32), SEEDS)
