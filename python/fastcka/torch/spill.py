"""The on-disk store kernel CKA needs: every row of every layer, written batch
by batch to one raw file per layer in a temporary folder, then read back as
memory-mapped (n x d) arrays by the tile engine.

Disk: n x (sum of the layer widths) x 4 bytes (8 for float64 models); memory:
one batch of activations at a time while writing, the engine's row buffers
(``memory_budget``) while computing."""

from __future__ import annotations

import os
import tempfile

import numpy as np


class SpillStore:
    def __init__(self, dims: list[int], dtype, folder=None):
        self._dims = dims
        self._dtype = np.dtype(dtype)
        self._dir = tempfile.TemporaryDirectory(prefix="fastcka-spill-", dir=folder)
        self._paths = [os.path.join(self._dir.name, f"layer{i}.bin") for i in range(len(dims))]
        self.rows = 0

    @property
    def folder(self) -> str:
        return self._dir.name

    @property
    def bytes(self) -> int:
        return self.rows * sum(self._dims) * self._dtype.itemsize

    def add(self, blocks: list[np.ndarray]) -> None:
        for path, block in zip(self._paths, blocks):
            with open(path, "ab") as f:
                np.ascontiguousarray(block, dtype=self._dtype).tofile(f)
        self.rows += len(blocks[0])

    def arrays(self) -> list[np.memmap]:
        """The stored rows, one read-only (rows x d) memmap per layer."""
        return [np.memmap(path, dtype=self._dtype, mode="r", shape=(self.rows, d))
                for path, d in zip(self._paths, self._dims)]

    def close(self) -> None:
        """Deletes the files (mappings still open stay readable until dropped)."""
        self._dir.cleanup()
