"""Float rows in a memory-mapped file: kept on disk, paged in only where they are read.

A quantized :class:`~.dense.DenseIndex` with ``rescore="float"`` keeps its float32 vectors
here, so its resident memory is the codes (and the pages of the few candidates a search
rescores), while the rescoring is exact. The file lives in a private temporary folder and
is deleted with the object (or at exit).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref

import numpy as np


class MappedRows:
    """A growable ``[rows, D]`` float32 array in a memory-mapped temporary file.

    Args:
        dim: columns.
        directory: where the temporary folder goes (default: the system's temp folder).
    """

    def __init__(self, dim: int, directory: str | os.PathLike | None = None) -> None:
        self.dim = dim
        self._folder = tempfile.mkdtemp(prefix="vllm-pool-rows-", dir=directory)
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._generation = 0
        self._rows = self._new(64)

    def _new(self, capacity: int) -> np.memmap:
        self._generation += 1
        path = os.path.join(self._folder, f"rows-{self._generation}.f32")
        return np.memmap(path, dtype=np.float32, mode="w+", shape=(capacity, self.dim))

    def _replace(self, rows: np.memmap) -> None:
        old = self._rows
        self._rows = rows
        name = old.filename
        del old
        if name and os.path.exists(name):
            os.remove(name)

    @property
    def capacity(self) -> int:
        return len(self._rows)

    def write(self, start: int, values: np.ndarray) -> None:
        """Write ``values`` at rows ``start...``, growing the file (doubling) as needed."""
        end = start + len(values)
        if end > len(self._rows):
            grown = self._new(max(2 * len(self._rows), end))
            grown[:start] = self._rows[:start]
            self._replace(grown)
        self._rows[start:end] = values

    def take(self, rows: np.ndarray) -> np.ndarray:
        """A copy of the given rows ``[len(rows), D]``."""
        return np.asarray(self._rows[np.asarray(rows, dtype=np.int64)])

    def keep(self, rows: np.ndarray) -> None:
        """Keep only ``rows``, in that order, at the start (compaction)."""
        kept = self._new(max(len(rows), 64))
        for start in range(0, len(rows), 65536):  # bounded memory per step
            part = rows[start : start + 65536]
            kept[start : start + len(part)] = self._rows[part]
        self._replace(kept)

    def close(self) -> None:
        """Delete the file now (also done when the object is collected)."""
        self._finalizer()
