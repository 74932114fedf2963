"""MNIST, KMNIST, EMNIST, CIFAR-100, SVHN and ImageFolder (normbench.data.torchvision_sets): their real loading code
on small files the tests write in each dataset's own format, as CIFAR-10's is tested (tests/test_data.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from normbench.config import load_config
from normbench.data import load_data
from normbench.errors import ConfigError
from normbench.train import train

RNG = np.random.default_rng(3)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file (the format of MNIST and its kin): magic (ubyte, ndim), sizes, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(raw: Path, names: dict[str, str], n_train: int = 12, n_test: int = 5,
                     classes: int = 10) -> dict[str, np.ndarray]:
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        out[f"{split}_x"] = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        out[f"{split}_y"] = RNG.integers(0, classes, n, dtype=np.uint8)
        write_idx(raw / names[f"{split}_x"], out[f"{split}_x"])
        write_idx(raw / names[f"{split}_y"], out[f"{split}_y"])
    return out


MNIST_NAMES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
               "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def check_written(data, written, classes: int) -> None:
    assert data.train_x.shape == (len(written["train_y"]), 1, 28, 28) and data.num_classes == classes
    torch.testing.assert_close(data.train_x[:, 0], torch.from_numpy(written["train_x"]).float() / 255)
    torch.testing.assert_close(data.test_x[:, 0], torch.from_numpy(written["test_x"]).float() / 255)
    assert data.train_y.tolist() == written["train_y"].tolist()
    assert data.test_y.tolist() == written["test_y"].tolist()


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_mnist_and_kmnist_read_their_idx_files_through_torchvision(tmp_path, name):
    written = write_mnist_like(tmp_path / name.upper() / "raw", MNIST_NAMES)
    check_written(load_data(name, str(tmp_path)), written, 10)


def test_emnist_reads_the_split_it_is_given(tmp_path):
    names = {"train_x": "emnist-letters-train-images-idx3-ubyte", "train_y": "emnist-letters-train-labels-idx1-ubyte",
             "test_x": "emnist-letters-test-images-idx3-ubyte", "test_y": "emnist-letters-test-labels-idx1-ubyte"}
    written = write_mnist_like(tmp_path / "EMNIST" / "raw", names, classes=27)
    check_written(load_data("emnist", str(tmp_path), split="letters"), written, 27)  # letters: N/A + 26
    with pytest.raises(ConfigError, match=r"^EMNIST \(balanced\) not found in data.root="):
        load_data("emnist", str(tmp_path))  # the default split's files are not there
    with pytest.raises(ConfigError, match="data.split must be one of byclass, bymerge, balanced, letters, digits"):
        load_config(["data=emnist", "data.split=greek"])


def test_a_missing_torchvision_dataset_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"^MNIST not found in data.root=.*; point data.root=PATH at a folder "
                                          r"holding MNIST/raw/"):
        load_data("mnist", str(tmp_path))


def test_cifar100_reads_its_python_batches_with_the_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    written = {}
    for split, n in (("train", 9), ("test", 4)):
        entry = {"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": RNG.integers(0, 100, n).tolist(), "coarse_labels": RNG.integers(0, 20, n).tolist()}
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
        written[split] = entry
    data = load_data("cifar100", str(tmp_path))
    assert data.num_classes == 100 and data.train_x.shape == (9, 3, 32, 32)
    first = torch.from_numpy(written["train"]["data"][0].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(data.train_x[0], first)
    assert data.test_y.tolist() == written["test"]["fine_labels"]
    with pytest.raises(ConfigError, match=r"^CIFAR-100 not found in data.root="):
        load_data("cifar100", str(tmp_path / "elsewhere"))


def test_svhn_reads_its_mat_files_and_label_10_is_the_digit_0(tmp_path):
    import scipy.io

    written = {}
    for split, n in (("train", 7), ("test", 3)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [3], [1], [10], [9], [2], [5]][:n], dtype=np.uint8)
        scipy.io.savemat(str(tmp_path / f"{split}_32x32.mat"), {"X": x, "y": y})
        written[split] = (x, y)
    data = load_data("svhn", str(tmp_path))
    x, y = written["train"]
    assert data.train_x.shape == (7, 3, 32, 32) and data.num_classes == 10
    # image i is X[:, :, :, i] (height, width, channel) -> (channel, height, width)
    torch.testing.assert_close(data.train_x[1], torch.from_numpy(np.transpose(x[:, :, :, 1], (2, 0, 1))).float() / 255)
    assert data.train_y.tolist() == [0, 3, 1, 0, 9, 2, 5]
    assert data.test_y.tolist() == [0, 3, 1]


def write_images(root: Path, classes: dict[str, int], sizes: tuple[int, int] = (10, 7)) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for name, n in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = RNG.integers(0, 256, (sizes[1], sizes[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_reads_a_user_s_folders_of_images(tmp_path):
    from PIL import Image

    write_images(tmp_path, {"cat": 3, "dog": 2}, sizes=(8, 8))
    data = load_data("image_folder", str(tmp_path), image_size=8)
    assert data.num_classes == 2 and data.train_x.shape == (5, 3, 8, 8)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1]  # classes by folder name: cat 0, dog 1
    pixels = np.asarray(Image.open(tmp_path / "train" / "dog" / "1.png"))
    torch.testing.assert_close(data.train_x[4], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    grey = load_data("image_folder", str(tmp_path), image_size=4, grayscale=True)
    assert grey.train_x.shape == (5, 1, 4, 4)


def test_image_folder_trains_and_refuses_a_bad_folder(tmp_path):
    write_images(tmp_path / "imgs", {"a": 8, "b": 8}, sizes=(12, 9))
    cfg = load_config(["data=image_folder", f"data.root={tmp_path / 'imgs'}", "data.image_size=16",
                       "data.batch_size=4", "trainer.max_epochs=1", "trainer.progress_bar=false",
                       "trainer.accelerator=cpu", "calib.samples=8", f"out_dir={tmp_path / 'run'}"])
    summary = train(cfg).summary
    assert summary["status"] == "ok" and summary["config"]["data"]["image_size"] == 16
    with pytest.raises(ConfigError, match=r"^data=image_folder needs data.root=PATH"):
        load_config(["data=image_folder"])
    (tmp_path / "imgs" / "test" / "a").rename(tmp_path / "imgs" / "test" / "c")
    with pytest.raises(ConfigError, match=r"train/ has classes \['a', 'b'\] but test/ has \['b', 'c'\]"):
        load_data("image_folder", str(tmp_path / "imgs"), image_size=16)
