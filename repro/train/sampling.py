"""The sample order: a pure function of (seed, dataset size, step).

Keeping the order stateless means a resumed or rebuilt run can recompute exactly
which rows step N consumed, and the lock can carry a digest of the whole order.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import torch


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"repro-sample-order:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SampleOrder:
    """Global batches for every step: each epoch is a seeded permutation, last partial batch dropped."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool) -> None:
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the {n} training rows")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.batches_per_epoch = n // batch_size

    @lru_cache(maxsize=2)  # noqa: B019 - one order per run; the cache dies with it
    def _perm(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n, dtype=torch.int64)
        g = torch.Generator(device="cpu").manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g, dtype=torch.int64)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, offset into that epoch's permutation) where `step` starts."""
        return step // self.batches_per_epoch, (step % self.batches_per_epoch) * self.batch_size

    def batch(self, step: int) -> torch.Tensor:
        """Row indices of the global batch consumed at `step` (0-based)."""
        epoch, offset = self.position(step)
        return self._perm(epoch)[offset : offset + self.batch_size]


class OrderDigest:
    """sha256 over the consumed indices as little-endian int64, in order.

    Indices are buffered and hashed in blocks: one small hash per step costs a
    measurable share of a small model's step.
    """

    BLOCK = 256

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._pending: list[torch.Tensor] = []
        self.count = 0

    def update(self, indices: torch.Tensor) -> None:
        self._pending.append(indices)
        self.count += int(indices.numel())
        if len(self._pending) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            block = torch.cat(self._pending).to(torch.int64).numpy().astype("<i8", copy=False)
            self._h.update(block.tobytes())
            self._pending.clear()

    def hexdigest(self) -> str:
        self._flush()
        return self._h.hexdigest()
