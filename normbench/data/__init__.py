"""Datasets held in memory as tensors, batched by index.

Public API:
    load_data(name, root=None, train_subset=None, test_subset=None, val_fraction=0.0, device="cpu",
              normalize=None, download=True, **options) -> InMemoryData
    available() -> list of registered dataset names
"""

from normbench.data.memory import BatchLoader, InMemoryData, load_data
from normbench.data.registry import DATASETS, RawSplits, register_dataset

# Importing the dataset modules fills the registry.
from normbench.data import fashion_mnist as _fashion_mnist  # noqa: E402,F401  isort: skip
from normbench.data import cifar as _cifar  # noqa: E402,F401  isort: skip
from normbench.data import synthetic as _synthetic  # noqa: E402,F401  isort: skip
from normbench.data import torchvision_sets as _torchvision_sets  # noqa: E402,F401  isort: skip

__all__ = ["DATASETS", "BatchLoader", "InMemoryData", "RawSplits", "available", "load_data", "register_dataset"]


def available() -> list[str]:
    return DATASETS.names()
