"""Datasets: the IDX and CIFAR readers on files the tests write, subsets, batching, missing data."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from normbench.data import load_data
from normbench.data.fashion_mnist import read_idx
from normbench.data.memory import BatchLoader
from normbench.errors import ConfigError
from tests.helpers import requires_fmnist


def write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


@pytest.fixture
def fake_fmnist(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    sets = {"train": 50, "t10k": 20}
    arrays = {}
    for prefix, n in sets.items():
        x = rng.integers(0, 256, size=(n, 28, 28))
        y = rng.integers(0, 10, size=(n,))
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
        arrays[prefix] = (x, y)
    return root, arrays


def test_idx_reader_roundtrip(fake_fmnist):
    root, arrays = fake_fmnist
    data = load_data("fashion_mnist", str(root))
    x, y = arrays["train"]
    assert data.train_x.shape == (50, 1, 28, 28) and data.test_x.shape == (20, 1, 28, 28)
    torch.testing.assert_close(data.train_x[:, 0], torch.from_numpy(x).float() / 255)
    assert data.train_y.tolist() == y.tolist()
    assert data.source == str(root)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ConfigError, match="not an IDX file of unsigned bytes"):
        read_idx(path)


def test_idx_truncated(tmp_path):
    path = tmp_path / "t.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(path)


def test_missing_fmnist_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion_mnist", str(tmp_path))


def write_cifar(root, n_train=10, n_test=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_train
        entry = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, size=n).tolist(), "batch_label": name}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        batches[name] = entry
    return batches


def test_cifar_reader_on_written_batches(tmp_path):
    batches = write_cifar(tmp_path)
    data = load_data("cifar10", str(tmp_path))
    assert data.train_x.shape == (50, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    first = torch.from_numpy(batches["data_batch_1"]["data"][0].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(data.train_x[0], first)
    assert data.test_y.tolist() == batches["test_batch"]["labels"]


def test_cifar_normalize_uses_train_stats(tmp_path):
    write_cifar(tmp_path)
    data = load_data("cifar10", str(tmp_path), normalize=True)
    torch.testing.assert_close(data.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_cifar_missing(tmp_path):
    with pytest.raises(ConfigError, match="CIFAR-10 not found in data.root="):
        load_data("cifar10", str(tmp_path))


def test_subsets_are_seed_independent_and_val_split_disjoint():
    a = load_data("synthetic", train_subset=100, test_subset=40, val_fraction=0.2)
    b = load_data("synthetic", train_subset=100, test_subset=40, val_fraction=0.2)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_x, b.val_x)
    assert len(a.train_x) == 80 and len(a.val_x) == 20 and len(a.test_x) == 40
    full = load_data("synthetic")
    rows = {tuple(r.flatten()[:8].tolist()) for r in a.train_x}
    assert not rows & {tuple(r.flatten()[:8].tolist()) for r in a.val_x}
    assert len(full.train_x) == 512


def test_batch_loader_epochs_cover_the_data_and_differ():
    x = torch.arange(10).float().reshape(10, 1, 1, 1)
    y = torch.arange(10)
    loader = BatchLoader(x, y, 3, shuffle=True, drop_last=False, seed=0)
    assert len(loader) == 4
    e1 = torch.cat([b[1] for b in loader])
    e2 = torch.cat([b[1] for b in loader])
    assert sorted(e1.tolist()) == list(range(10)) and not torch.equal(e1, e2)
    assert len(BatchLoader(x, y, 3, shuffle=True, drop_last=True)) == 3


def test_batch_loader_shards_disjointly_across_ranks():
    x = torch.arange(12).float().reshape(12, 1, 1, 1)
    y = torch.arange(12)
    shards = [torch.cat([b[1] for b in BatchLoader(x, y, 2, shuffle=True, drop_last=True, seed=5, rank=r,
                                                   world_size=2)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert sorted(torch.cat(shards).tolist()) == list(range(12))


def test_augmentation_keeps_shape_and_is_seeded():
    x = torch.rand(8, 3, 32, 32)
    y = torch.zeros(8, dtype=torch.long)
    a = next(iter(BatchLoader(x, y, 8, shuffle=False, drop_last=False, seed=1, augment=True)))[0]
    b = next(iter(BatchLoader(x, y, 8, shuffle=False, drop_last=False, seed=1, augment=True)))[0]
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


@requires_fmnist
def test_real_fashion_mnist_from_system_path():
    data = load_data("fashion_mnist", train_subset=1000, test_subset=500)
    assert data.train_x.shape == (1000, 1, 28, 28) and data.test_x.shape == (500, 1, 28, 28)
    assert float(data.train_x.min()) >= 0.0 and float(data.train_x.max()) <= 1.0
    assert set(data.train_y.tolist()) == set(range(10))


def test_trailing_single_sample_batch_dropped_for_batch_stat_norms():
    x = torch.zeros(9, 1, 2, 2)
    y = torch.zeros(9, dtype=torch.long)
    assert [len(b[1]) for b in BatchLoader(x, y, 4, shuffle=False, drop_last=False, min_batch=2)] == [4, 4]
    assert [len(b[1]) for b in BatchLoader(x, y, 4, shuffle=False, drop_last=False)] == [4, 4, 1]


def test_raw_data_cache_reads_the_files_once_and_hands_out_copies(fake_fmnist):
    from normbench.data.memory import raw_data_cache

    root, _ = fake_fmnist
    with raw_data_cache():
        first = load_data("fashion_mnist", root=str(root))
        first.train_y.fill_(9)  # a caller's edit must not reach the cache
        for f in root.iterdir():
            f.unlink()  # the second load cannot read the files: it comes from the cache
        second = load_data("fashion_mnist", root=str(root), train_subset=4)
        assert len(second.train_x) == 4 and not (second.train_y == 9).all()
    with pytest.raises(ConfigError):  # outside the block every load reads the files
        load_data("fashion_mnist", root=str(root), download=False)
