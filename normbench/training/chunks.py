"""Several optimizer steps per Lightning batch: the training loader's batches grouped into chunks.

Lightning's loop costs about 0.2 ms per batch on a CPU (the fetcher, the progress counters, and each
per-batch hook dispatched to every callback under a profiler context); a LeNet step at batch 2 is about
0.85 ms of arithmetic. `StepChunks` hands Lightning `steps` consecutive batches of the loader at once, and
`normbench.training.module.Classifier` makes one optimizer step per batch of the chunk, so that cost is paid
once per chunk. The batches, their order and every step's arithmetic are those of the unchunked loop
(`tests/test_chunks.py`). Lightning's `batch_idx`, its progress bar and the per-batch callback hooks count
chunks; `trainer.global_step` and `max_steps` count optimizer steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class StepChunks:
    """Iterates lists of up to `steps` consecutive (x, y) batches of `loader`; the last chunk of an epoch may be
    shorter. The loader's other attributes (its random state, `left_out`, ...) are reached through the chunks."""

    def __init__(self, loader: Any, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.loader = loader
        self.steps = steps

    @property
    def micro_batches(self) -> int:
        """The loader's batches per epoch (optimizer steps times accumulation)."""
        return len(self.loader)

    def __len__(self) -> int:
        return -(-len(self.loader) // self.steps)

    def __iter__(self) -> Iterator[list[Batch]]:
        chunk: list[Batch] = []
        for batch in self.loader:
            chunk.append(batch)
            if len(chunk) == self.steps:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. while unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.loader, name)


def batches_of(batch: Any) -> list[Batch]:
    """The (x, y) batches of what Lightning handed a training step: a chunk, or one batch."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return [(batch[0], batch[1])]
    return list(batch)


def chunk_steps(setting: int | str, devices: int, batch_size: int) -> int:
    """Optimizer steps per Lightning batch for `trainer.chunk_steps` (`auto`: as many as keep each chunk at
    about 4,096 training samples, at most 32 and at least 1; 1 with several devices, where a data-parallel
    strategy expects one backward pass per forward call)."""
    if setting != "auto":
        return int(setting)
    if devices > 1:
        return 1
    return max(1, min(32, 4096 // max(1, batch_size)))
