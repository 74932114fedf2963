"""Chunked steps (trainer.chunk_steps, normbench.training.chunks): several optimizer steps per Lightning batch
give exactly the numbers of one step per batch: the same weights, running statistics, step count and per-epoch
figures, with gradient accumulation across chunk borders (a shorter last window), clipping, pooled
(accumulation-aware) statistics, max_steps inside a chunk, and a resumed run."""

from __future__ import annotations

import pytest
import torch

from normbench.config import ConfigError, load_config
from normbench.train import train
from normbench.training.chunks import StepChunks, batches_of, chunk_steps

# figures that may differ between two runs of the same numbers
_TIMING = {"examples_per_sec", "chunk_steps", "checkpoint", "out_dir", "created_at", "resumed_from",
           "resumed_from_step"}


def _run(tmp_path, name: str, *overrides: str):
    cfg = load_config(["data=synthetic", "data.num_train=150", "data.num_test=40", "data.batch_size=8",
                       "data.drop_last=false", "trainer.max_epochs=2", "trainer.progress_bar=false", "optim.lr=0.3",
                       "optim.momentum=0.9",
                       "calib.samples=64", f"out_dir={tmp_path / name}", *overrides])
    result = train(cfg)
    return result.summary, {k: v.detach().clone() for k, v in result.module.net.state_dict().items()}


def _numbers(value):
    """`value` without its timing figures (recursively)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if k not in _TIMING and not k.endswith("_s")}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


@pytest.mark.parametrize("extra", [
    ("trainer.accumulate_grad_batches=3", "trainer.gradient_clip_val=0.5"),  # 19 batches: windows cross chunks
    ("norm=bn", "norm.accumulation_aware=true", "trainer.accumulate_grad_batches=4"),
    ("trainer.max_steps=13",),  # stops inside the second chunk of 5
])
def test_chunked_steps_give_the_numbers_of_one_step_per_batch(tmp_path, extra):
    one, w_one = _run(tmp_path, "one", "trainer.chunk_steps=1", *extra)
    five, w_five = _run(tmp_path, "five", "trainer.chunk_steps=5", *extra)
    assert w_one.keys() == w_five.keys()
    for k in w_one:  # weights and running statistics, bit for bit
        assert torch.equal(w_one[k], w_five[k]), k
    assert (one["chunk_steps"], five["chunk_steps"]) == (1, 5)
    assert one["train_batches"] == five["train_batches"] == 19
    assert _numbers(one) == _numbers(five)
    assert one["train_examples_seen"] == five["train_examples_seen"] > 0
    if "trainer.max_steps=13" in extra:
        assert five["train_examples_seen"] == 13 * 8


def test_chunked_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    full, _ = _run(tmp_path, "full", "trainer.chunk_steps=4", "trainer.max_epochs=3")
    _run(tmp_path, "part", "trainer.chunk_steps=4", "trainer.max_epochs=1")
    resumed, _ = _run(tmp_path, "part", "trainer.chunk_steps=4", "trainer.max_epochs=3", "trainer.ckpt_path=last")
    assert _numbers(resumed)["history"] == _numbers(full)["history"]
    assert resumed["test_acc"] == full["test_acc"]


def test_a_checkpoint_resumes_with_another_chunk_size(tmp_path):
    """trainer.chunk_steps does not change the numbers, so a resume may change it (normbench.overrides.NEUTRAL_KEYS)."""
    full, _ = _run(tmp_path, "full", "trainer.chunk_steps=1", "trainer.max_epochs=2")
    _run(tmp_path, "part", "trainer.chunk_steps=4", "trainer.max_epochs=1")
    resumed, _ = _run(tmp_path, "part", "trainer.chunk_steps=1", "trainer.max_epochs=2", "trainer.ckpt_path=last")
    assert resumed["resumed_from_step"] > 0
    assert _numbers(resumed)["history"] == _numbers(full)["history"]


def test_step_chunks_group_consecutive_batches_and_keep_the_loaders_state():
    x, y = torch.arange(22.0).view(22, 1), torch.arange(22)
    from normbench.data.memory import BatchLoader

    loader = BatchLoader(x, y, 4, shuffle=True, drop_last=False, seed=3)  # 6 batches, the last of 2
    chunks = StepChunks(loader, 4)
    state = chunks.state_dict()
    flat = [b for chunk in chunks for b in chunk]
    assert [len(c) for c in chunks] == [4, 2] and len(chunks) == 2 and chunks.micro_batches == 6
    chunks.load_state_dict(state)  # the same epoch again
    plain = list(loader)
    assert len(flat) == len(plain) == 6
    assert all(torch.equal(a[1], b[1]) for a, b in zip(flat, plain, strict=True))
    assert chunks.left_out == loader.left_out == 0  # the loader's attributes through the chunks
    assert len(batches_of((x[:2], y[:2]))) == 1 and len(batches_of(flat[:3])) == 3


def test_auto_chunk_steps():
    assert chunk_steps("auto", 1, 2) == 32
    assert chunk_steps("auto", 1, 256) == 16
    assert chunk_steps("auto", 1, 8192) == 1
    assert chunk_steps("auto", 2, 2) == 1
    assert chunk_steps(7, 1, 2) == 7


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.chunk_steps=0"], "trainer.chunk_steps must be"),
    (["trainer.chunk_steps=many"], "trainer.chunk_steps"),
    (["trainer.chunk_steps=4", "trainer.devices=2"], "trainer.chunk_steps=4 needs trainer.devices=1"),
])
def test_bad_chunk_steps_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["data=synthetic", *overrides])
