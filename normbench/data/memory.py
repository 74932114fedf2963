"""The whole (small) dataset as tensors on one device, and an index-based batch iterator.

Batches are gathered with one `index_select` from the resident tensors instead of per-sample
`Dataset.__getitem__` + collate, so the data path is never the bottleneck (the airbench approach).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from normbench.data.registry import DATASETS, RawSplits
from normbench.errors import ConfigError

SUBSET_SEED = 0  # subsets and the validation split do not depend on the run seed


@dataclass
class InMemoryData:
    """Float image tensors (N, C, H, W) and int64 labels per split, all on `device`."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    num_classes: int
    source: str

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "val" and self.val_x is None:
            raise ValueError("no validation split: set data.val_fraction > 0")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
               min_batch: int = 1, seed: int = 0, augment: bool = False, rank: int = 0, world_size: int = 1,
               distributed: bool = False, composition: str = "iid",
               composition_options: dict[str, Any] | None = None,
               max_batches: int | float | None = None) -> BatchLoader:
        x, y = self.split(split)
        return BatchLoader(x, y, batch_size, shuffle=shuffle, drop_last=drop_last, min_batch=min_batch, seed=seed,
                           augment=augment, rank=rank, world_size=world_size, distributed=distributed,
                           composition=composition, composition_options=composition_options,
                           max_batches=max_batches)

    def to(self, device: torch.device | str) -> InMemoryData:
        moved: dict[str, Any] = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return InMemoryData(**moved)


class BatchLoader:
    """Iterates (x, y) batches of resident tensors; a new seeded permutation every epoch.

    With `world_size > 1` each rank takes an equal, disjoint share of every epoch's permutation (samples
    rank, rank + world_size, ...), which is what a DistributedSampler would give (Lightning does not
    shard custom iterables itself). With `distributed=True` the rank and world size are those of the
    default process group, read at each `len()` and `iter()`: a Lightning DDP run creates the group
    after the loader, and before that (or without one) the loader is unsharded. Every rank seeds the
    same permutation, so the ranks' batches of one step are together the batch a single process with
    `world_size` times the batch size would draw.
    `augment` applies random horizontal flips and 4-pixel-padded random crops per batch, on the device.
    Without `drop_last`, a trailing partial batch smaller than `min_batch` is still dropped (a batch of one
    sample is meaningless to batch-statistics norms, which then get `min_batch=2`). With `tail_multiple=m`
    a trailing partial batch of r > m samples comes as two batches, the largest multiple of m and the rest,
    for norms that split a batch into sub-batches of m (ghost BN normalizes a batch of at most m samples as
    one ghost batch). `left_out` counts the samples per epoch that no batch holds.
    `composition` (normbench.data.composition) other than `iid` lets a registered composition decide each
    epoch's batches from the labels (e.g. `k_classes`: K classes per batch); their number does not change
    between epochs, and with several ranks each rank takes every world_size-th batch (an equal count).
    `max_batches` keeps only the first batches of every epoch: that many (an integer), or that fraction of
    them (a float in (0, 1], at least one batch), as Lightning's `limit_train_batches` counts; the permutation
    is still drawn over all samples, so the batches are those of the unlimited loader, and `left_out` counts
    the samples it leaves out.
    `state_dict()`/`load_state_dict()` save and restore the random state (the order and augmentation of the
    coming epochs), so a resumed run draws the batches an uninterrupted one would.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool, drop_last: bool,
                 min_batch: int = 1, seed: int = 0, augment: bool = False, rank: int = 0, world_size: int = 1,
                 distributed: bool = False, tail_multiple: int = 1, composition: str = "iid",
                 composition_options: dict[str, Any] | None = None, max_batches: int | float | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(max_batches, float):
            bad = not 0 < max_batches <= 1
        else:
            bad = max_batches is not None and max_batches < 1
        if bad:
            raise ValueError(f"max_batches must be an integer >= 1, a fraction in (0, 1] or None, got {max_batches}")
        self.max_batches = max_batches
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if distributed and (rank, world_size) != (0, 1):
            raise ValueError("give rank/world_size or distributed=True, not both")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last, self.min_batch = batch_size, shuffle, drop_last, min_batch
        self.tail_multiple = max(1, tail_multiple)
        self.augment, self.distributed = augment, distributed
        self._rank, self._world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self.composition = composition
        self.composition_options = dict(composition_options or {})
        self._composed: int | None = None  # batches per epoch of a non-iid composition
        if composition != "iid":
            from normbench.data.composition import COMPOSITIONS, check_composition

            check_composition(composition, batch_size, self.composition_options.get("classes_per_batch"))
            chosen = COMPOSITIONS[composition]
            assert chosen.batches is not None and chosen.count is not None  # every composition but iid has both
            self._compose = chosen.batches
            self._composed = chosen.count(self.y, batch_size, **self.composition_options)

    @property
    def rank(self) -> int:
        return self.shard()[0]

    @property
    def world_size(self) -> int:
        return self.shard()[1]

    def shard(self) -> tuple[int, int]:
        """(rank, world size) this loader serves now."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return dist.get_rank(), dist.get_world_size()
        return self._rank, self._world_size

    @property
    def per_rank(self) -> int:
        world_size = self.world_size
        return len(self.x) // world_size if world_size > 1 else len(self.x)

    def state_dict(self) -> dict[str, Any]:
        """The random state that decides the coming epochs' batches."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def batch_slices(self) -> list[tuple[int, int]]:
        """(start, size) of every batch of an epoch, as positions in the (rank's share of the) order."""
        slices = self._all_slices()
        return slices[: self._limit(len(slices))]

    def _limit(self, n: int) -> int:
        """How many of an epoch's `n` batches `max_batches` keeps."""
        if self.max_batches is None:
            return n
        if isinstance(self.max_batches, float):
            return min(n, max(1, int(n * self.max_batches)))
        return min(n, self.max_batches)

    def _all_slices(self) -> list[tuple[int, int]]:
        b, m = self.batch_size, self.tail_multiple
        full, rest = divmod(self.per_rank, b)
        out = [(i * b, b) for i in range(full)]
        if rest and not self.drop_last:
            start = full * b
            for size in ([rest] if rest <= m else [rest - rest % m, rest % m]):
                if size >= max(1, self.min_batch):
                    out.append((start, size))
                start += size
        return out

    @property
    def left_out(self) -> int:
        """Samples of this rank's share that no batch of an epoch holds (drop_last, min_batch, composition)."""
        if self._composed is not None:
            return self.per_rank - len(self) * self.batch_size  # composed batches are full
        return self.per_rank - sum(size for _, size in self.batch_slices())

    def __len__(self) -> int:
        if self._composed is not None:
            return self._limit(self._composed // self.world_size)
        return len(self.batch_slices())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        rank, world_size = self.shard()
        if self._composed is not None:
            batches = self._compose(self.y, self.batch_size, self.generator, **self.composition_options)
            for idx in batches[rank: len(self) * world_size: world_size]:
                idx = idx.to(self.x.device)
                xb = self.x.index_select(0, idx)
                if self.augment:
                    xb = flip_and_crop(xb, self.generator)
                yield xb, self.y.index_select(0, idx)
            return
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if world_size > 1:
            order = order[rank: self.per_rank * world_size: world_size]
        order = order.to(self.x.device)
        for start, size in self.batch_slices():
            idx = order[start: start + size]
            xb = self.x.index_select(0, idx)
            if self.augment:
                xb = flip_and_crop(xb, self.generator)
            yield xb, self.y.index_select(0, idx)


def flip_and_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop after zero padding, one draw per sample."""
    n, _, h, w = x.shape
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None:
        return x, y
    if not 1 <= n <= len(x):  # never clipped silently: the record would not say what ran
        raise ConfigError(f"data.{what}={n} must be in [1, {len(x)}]: the dataset has {len(x)} samples there "
                          "(null: all of them)")
    if n == len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
    return x[idx], y[idx]


class _RawCache:
    """The last few datasets read, by (name, root, download, options): a sweep worker's trials read the same
    files again and again (about a second per trial for Fashion-MNIST: gunzip and copies)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple, RawSplits] = OrderedDict()

    def get(self, key: tuple, read: Any) -> RawSplits:
        if key in self.entries:
            self.entries.move_to_end(key)
        else:
            self.entries[key] = read()
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        raw = self.entries[key]  # copies out: a caller that edits its tensors cannot change the cached ones
        return replace(raw, **{k: getattr(raw, k).clone() for k in ("train_x", "train_y", "test_x", "test_y")})


_raw_cache: _RawCache | None = None


@contextlib.contextmanager
def raw_data_cache(size: int = 2) -> Iterator[None]:
    """Within this block `load_data` reads each dataset once and keeps its `size` most recent ones in memory
    (a sweep worker's loop; outside it every call reads the files, so a changed file is always seen)."""
    global _raw_cache
    previous, _raw_cache = _raw_cache, _RawCache(size)
    try:
        yield
    finally:
        _raw_cache = previous


def _read_raw(entry: Any, root: str | None, download: bool, options: dict[str, Any]) -> RawSplits:
    if _raw_cache is None:
        return entry.fn(root, download, **options)
    key = (entry.name, root, download, tuple(sorted((k, repr(v)) for k, v in options.items())))
    return _raw_cache.get(key, lambda: entry.fn(root, download, **options))


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def load_data(name: str, root: str | None = None, *, train_subset: int | None = None,
              test_subset: int | None = None, val_fraction: float = 0.0, normalize: bool = False,
              download: bool = True, device: torch.device | str = "cpu", **options: Any) -> InMemoryData:
    """Loads dataset `name` into memory as float tensors in [0, 1] (standardized if `normalize`).

    `train_subset`/`test_subset` take a fixed (seed-independent) random subset; `val_fraction` holds
    out that share of the (subset) training set as a validation split, so that a search never looks
    at the test set. With `normalize`, per-channel mean/std come from the training split only.
    """
    entry = DATASETS.get(name)
    raw = _read_raw(entry, root, download, entry.validate_options(options))
    train_x, train_y = _subset(raw.train_x, raw.train_y, train_subset, "train_subset")
    test_x, test_y = _subset(raw.test_x, raw.test_y, test_subset, "test_subset")
    train_x, test_x = _to_float(train_x), _to_float(test_x)
    val_x = val_y = None
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction > 0:
        n_val = max(1, int(round(len(train_x) * val_fraction)))
        perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(SUBSET_SEED + 1))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        val_x, val_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    if normalize:
        mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
        std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        if val_x is not None:
            val_x = (val_x - mean) / std
    data = InMemoryData(entry.name, train_x.contiguous(), train_y, test_x.contiguous(), test_y,
                        val_x, val_y, raw.num_classes, raw.source)
    return data.to(device)
