"""Batch compositions: which samples a training batch holds (`data.batch_composition`).

BatchNorm assumes every training batch is an i.i.d. sample of the data. A composition decides the
batches of one epoch as lists of sample positions; `BatchLoader` gathers them. Registered here:

- `iid`: a fresh seeded permutation cut into consecutive batches (the default; BatchLoader's own path).
- `k_classes`: every batch holds examples of exactly `data.classes_per_batch` = K classes, batch_size / K
  of each, as per-class sampling, class-sorted data or a streaming source would give. Each class's samples
  are shuffled and cut into chunks of batch_size / K; the chunks, grouped by class with the classes in a
  random order, are laid out in one list of n chunks and batch j takes chunks j, j + B, ..., j + (K-1)B
  (B = n // K batches). As no class holds more than B chunks, the K chunks of a batch come from K
  different classes; the class order (and so which classes share batches) and the batch order are redrawn
  every epoch. Every class appears in proportion to its size; samples that do not fill a chunk are left
  out (counted in `left_out`: none for Fashion-MNIST at batch 32 and K=2).

A new composition is a `Composition` entry in COMPOSITIONS: its epoch's batches (index tensors), their
number, and the options it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Batches = list[torch.Tensor]


@dataclass(frozen=True)
class Composition:
    """A registered composition: `batches(labels, batch_size, generator, **options)` gives one epoch's
    batches (position tensors); `count(labels, batch_size, **options)` their number, the same every epoch.
    Both None for `iid` (BatchLoader's own permutation)."""

    name: str
    batches: Callable[..., Batches] | None
    count: Callable[..., int] | None
    options: tuple[str, ...] = ()


COMPOSITIONS: dict[str, Composition] = {"iid": Composition("iid", None, None)}


def composition_names() -> list[str]:
    return list(COMPOSITIONS)


def check_composition(name: str, batch_size: int, classes_per_batch: int | None = None) -> None:
    """Raises ValueError (one line, with the accepted values) on a composition that cannot be built."""
    if name not in COMPOSITIONS:
        raise ValueError(f"data.batch_composition '{name}' is unknown; accepted: {', '.join(COMPOSITIONS)}")
    if "classes_per_batch" not in COMPOSITIONS[name].options:
        if classes_per_batch is not None:
            raise ValueError(f"data.classes_per_batch={classes_per_batch} applies to data.batch_composition=k_classes "
                             f"only (got {name}); leave it null")
        return
    if classes_per_batch is None:
        raise ValueError(f"data.batch_composition={name} needs data.classes_per_batch=K (classes in every batch, "
                         ">= 1 and dividing data.batch_size)")
    if classes_per_batch < 1:
        raise ValueError(f"data.classes_per_batch must be >= 1, got {classes_per_batch}")
    if batch_size % classes_per_batch:
        raise ValueError(f"data.classes_per_batch={classes_per_batch} must divide data.batch_size={batch_size} "
                         "(every class of a batch gets an equal share)")


def _chunk_counts(labels: torch.Tensor, batch_size: int, k: int) -> tuple[dict[int, int], int]:
    """({class: chunks of batch_size / k it gives}, batches per epoch) of a k_classes epoch.

    No class may hold more chunks than there are batches (it would meet itself in a batch): the largest
    class gives up chunks until it does not. Depends on the class sizes only, not on the epoch's draw.
    """
    check_composition("k_classes", batch_size, k)
    classes, sizes = torch.unique(labels.cpu(), return_counts=True)
    if len(classes) < k:
        raise ValueError(f"data.classes_per_batch={k} but the training data holds {len(classes)} classes")
    counts = {int(c): int(n) // (batch_size // k) for c, n in zip(classes, sizes, strict=True)}
    while True:
        b = sum(counts.values()) // k
        largest = max(counts, key=counts.__getitem__)
        if counts[largest] <= b or b == 0:
            break
        counts[largest] -= 1
    if b == 0:
        raise ValueError(f"data.classes_per_batch={k}: too few samples per class for one batch of {batch_size}")
    return counts, b


def k_classes_count(labels: torch.Tensor, batch_size: int, *, classes_per_batch: int) -> int:
    return _chunk_counts(labels, batch_size, classes_per_batch)[1]


def k_classes_batches(labels: torch.Tensor, batch_size: int, generator: torch.Generator, *,
                      classes_per_batch: int) -> Batches:
    """One epoch of batches of `classes_per_batch` classes each (module docstring), as position tensors."""
    k = classes_per_batch
    per_class = batch_size // k
    counts, b = _chunk_counts(labels, batch_size, k)
    labels = labels.cpu()
    chunks_of: dict[int, list[torch.Tensor]] = {}
    for c, n in counts.items():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        chunks_of[c] = list(idx[: n * per_class].split(per_class)) if n else []
    classes = list(counts)
    order = [classes[i] for i in torch.randperm(len(classes), generator=generator).tolist()]
    laid_out = [chunk for c in order for chunk in chunks_of[c]][: b * k]
    batches = [torch.cat([laid_out[j + i * b] for i in range(k)]) for j in range(b)]
    return [batches[i] for i in torch.randperm(b, generator=generator).tolist()]


COMPOSITIONS["k_classes"] = Composition("k_classes", k_classes_batches, k_classes_count, ("classes_per_batch",))
