"""Batch compositions (normbench.data.composition): each batch's class content, determinism, config."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from normbench.config import load_config
from normbench.data import load_data
from normbench.data.composition import composition_names, k_classes_batches
from normbench.data.memory import BatchLoader
from normbench.errors import ConfigError
from normbench.train import train
from tests.helpers import TINY, run_cli


def _labels(per_class: list[int]) -> torch.Tensor:
    y = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(per_class)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("k,batch", [(2, 32), (1, 8), (3, 12), (10, 20)])
def test_every_batch_holds_exactly_k_classes_in_equal_shares(k, batch):
    y = _labels([96] * 10)
    x = torch.arange(len(y), dtype=torch.float32)[:, None, None, None]
    loader = BatchLoader(x, y, batch, shuffle=True, drop_last=True, seed=3, composition="k_classes",
                         composition_options={"classes_per_batch": k})
    seen = []
    for xb, yb in loader:
        counts = Counter(yb.tolist())
        assert len(counts) == k and set(counts.values()) == {batch // k}, counts
        assert len(yb) == batch
        assert torch.equal(y[xb.flatten().long()], yb)  # images and labels stay together
        seen += xb.flatten().long().tolist()
    assert len(seen) == len(set(seen))  # no sample twice in an epoch
    assert len(seen) == len(loader) * batch == len(y) - loader.left_out
    per_class = Counter(y[torch.tensor(seen)].tolist())
    assert max(per_class.values()) - min(per_class.values()) <= batch // k  # every class equally often


def test_epochs_differ_and_the_seed_fixes_them():
    y = _labels([64] * 10)
    x = torch.arange(len(y), dtype=torch.float32)[:, None, None, None]

    def epochs(seed):
        loader = BatchLoader(x, y, 16, shuffle=True, drop_last=True, seed=seed, composition="k_classes",
                             composition_options={"classes_per_batch": 2})
        return [[b[0].flatten().long().tolist() for b in loader] for _ in range(2)]

    first, again, other = epochs(0), epochs(0), epochs(1)
    assert first == again
    assert first[0] != first[1] and first != other
    pairs = [{frozenset(Counter(y[torch.tensor(b)].tolist())) for b in ep} for ep in first]
    assert len(pairs[0] | pairs[1]) > len(pairs[0])  # the pairing of classes is redrawn each epoch


def test_unbalanced_classes_never_share_a_batch_with_themselves():
    y = _labels([200, 40, 30, 10, 5])  # one class holds most samples
    batches = k_classes_batches(y, 10, torch.Generator().manual_seed(0), classes_per_batch=2)
    assert batches
    for idx in batches:
        counts = Counter(y[idx].tolist())
        assert len(counts) == 2 and set(counts.values()) == {5}


def test_ranks_take_disjoint_equal_shares():
    y = _labels([50] * 10)
    x = torch.arange(len(y), dtype=torch.float32)[:, None, None, None]
    shares = [[xb.flatten().long().tolist() for xb, _ in
               BatchLoader(x, y, 10, shuffle=True, drop_last=True, seed=0, rank=r, world_size=2,
                           composition="k_classes", composition_options={"classes_per_batch": 2})]
              for r in range(2)]
    assert len(shares[0]) == len(shares[1]) > 0
    flat = [i for share in shares for b in share for i in b]
    assert len(flat) == len(set(flat))


def test_a_k_classes_run_records_its_composition(tmp_path):
    r = train(load_config([*TINY, f"out_dir={tmp_path / 'run'}", "data.batch_composition=k_classes",
                           "data.classes_per_batch=2", "data.batch_size=16"]))
    s = json.loads((r.out_dir / "summary.json").read_text())
    assert (s["batch_composition"], s["classes_per_batch"]) == ("k_classes", 2)
    assert s["config"]["data"]["batch_composition"] == "k_classes"
    assert s["train_left_out"] == 256 - 16 * (s["optimizer_steps"])
    iid = train(load_config([*TINY, f"out_dir={tmp_path / 'iid'}", "data.batch_size=16"])).summary
    assert (iid["batch_composition"], iid["classes_per_batch"], iid["train_left_out"]) == ("iid", None, 0)


def test_fashion_mnist_batches_of_two_classes_leave_nothing_out():
    data = load_data("synthetic", num_train=640, num_test=16)  # 64 per class, like Fashion-MNIST's 6,000
    loader = data.loader("train", 32, shuffle=True, drop_last=True, composition="k_classes",
                         composition_options={"classes_per_batch": 2})
    assert loader.left_out == 0 and len(loader) == 20


@pytest.mark.parametrize("overrides,message", [
    (["data.batch_composition=sorted"], "data.batch_composition 'sorted' is unknown; accepted: iid, k_classes"),
    (["data.batch_composition=k_classes"], "needs data.classes_per_batch"),
    (["data.batch_composition=k_classes", "data.classes_per_batch=3"], "must divide data.batch_size=32"),
    (["data.batch_composition=k_classes", "data.classes_per_batch=0"], "must be >= 1"),
    (["data.classes_per_batch=2"], "applies to data.batch_composition=k_classes only"),
])
def test_bad_compositions_are_refused_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config([*TINY, *overrides])


def test_cli_refuses_too_many_classes_per_batch_with_exit_2(tmp_path):
    r = run_cli("run", *TINY, f"out_dir={tmp_path / 'run'}", "data.batch_composition=k_classes",
                "data.classes_per_batch=16", "data.batch_size=32", "logger=none")
    assert r.returncode == 2
    assert "data.classes_per_batch=16 exceeds the 10 classes of synthetic" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_compositions_are_listed():
    assert composition_names() == ["iid", "k_classes"]
