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

A new composition is a function `fn(labels, batch_size, generator, **options) -> list of index tensors`
registered with `@register_composition(name, options=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Batches = list[torch.Tensor]


@dataclass(frozen=True)
class Composition:
    name: str
    fn: Callable[..., Batches] | None  # None: i.i.d. shuffling (BatchLoader's permutation)
    options: tuple[str, ...] = field(default_factory=tuple)
    doc: str = ""


COMPOSITIONS: dict[str, Composition] = {}


def register_composition(name: str, *, options: tuple[str, ...] = (), doc: str = ""):
    def deco(fn):
        COMPOSITIONS[name] = Composition(name, fn, options, doc)
        return fn

    return deco


COMPOSITIONS["iid"] = Composition("iid", None, (), "i.i.d. shuffling: a seeded permutation per epoch")


def composition_names() -> list[str]:
    return list(COMPOSITIONS)


def check_composition(name: str, batch_size: int, num_classes: int | None = None,
                      classes_per_batch: int | None = None) -> None:
    """Raises ValueError (one line, with the accepted values) on a composition that cannot be built."""
    if name not in COMPOSITIONS:
        raise ValueError(f"data.batch_composition '{name}' is unknown; accepted: {', '.join(COMPOSITIONS)}")
    uses_k = "classes_per_batch" in COMPOSITIONS[name].options
    if not uses_k:
        if classes_per_batch is not None:
            raise ValueError(f"data.classes_per_batch={classes_per_batch} applies to data.batch_composition=k_classes "
                             f"only (got {name}); leave it null")
        return
    if classes_per_batch is None:
        raise ValueError(f"data.batch_composition={name} needs data.classes_per_batch=K (classes in every batch, "
                         ">= 1 and dividing data.batch_size)")
    if classes_per_batch < 1:
        raise ValueError(f"data.classes_per_batch must be >= 1, got {classes_per_batch}")
    if num_classes is not None and classes_per_batch > num_classes:
        raise ValueError(f"data.classes_per_batch={classes_per_batch} exceeds the dataset's {num_classes} classes")
    if batch_size % classes_per_batch:
        raise ValueError(f"data.classes_per_batch={classes_per_batch} must divide data.batch_size={batch_size} "
                         "(every class of a batch gets an equal share)")


@register_composition("k_classes", options=("classes_per_batch",),
                      doc="every batch holds batch_size / K examples of each of K classes")
def k_classes_batches(labels: torch.Tensor, batch_size: int, generator: torch.Generator, *,
                      classes_per_batch: int) -> Batches:
    """One epoch of batches of `classes_per_batch` classes each (module docstring), as position tensors."""
    k = classes_per_batch
    check_composition("k_classes", batch_size, None, k)
    per_class = batch_size // k
    labels = labels.cpu()
    classes = torch.unique(labels)
    if len(classes) < k:
        raise ValueError(f"data.classes_per_batch={k} but the training data holds {len(classes)} classes")
    chunks_of: dict[int, list[torch.Tensor]] = {}
    for c in classes.tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        full = len(idx) // per_class
        chunks_of[c] = list(idx[: full * per_class].split(per_class)) if full else []
    # No class may hold more chunks than there are batches (it would meet itself in a batch): trim the largest.
    while True:
        n = sum(len(v) for v in chunks_of.values())
        b = n // k
        largest = max(chunks_of, key=lambda c: len(chunks_of[c]))
        if len(chunks_of[largest]) <= b or b == 0:
            break
        chunks_of[largest] = chunks_of[largest][:-1]
    if b == 0:
        raise ValueError(f"data.classes_per_batch={k}: too few samples per class for one batch of {batch_size}")
    order = [classes.tolist()[i] for i in torch.randperm(len(classes), generator=generator).tolist()]
    laid_out = [chunk for c in order for chunk in chunks_of[c]][: b * k]
    batches = [torch.cat([laid_out[j + i * b] for i in range(k)]) for j in range(b)]
    return [batches[i] for i in torch.randperm(b, generator=generator).tolist()]
