"""Child-process bodies for the fault-injection tests (imported by a forkserver, so each
child starts without paying for the imports again).

Documents are named ``k0, k1, ...`` and their vectors follow from their number, so the parent
can tell a consistent saved state (a prefix ``k0..kn`` with the right vectors) from a torn one.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import vllm_pool.retrievers.index_folder as index_folder
from vllm_pool.retrievers import DenseIndex, IndexFormatError, MultiVectorIndex

DIM = 8


def dense_vector(i: int) -> np.ndarray:
    """The vector of document ``k{i}`` (``float32 [DIM]``, unit length)."""
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def token_vectors(i: int) -> np.ndarray:
    """The token vectors of document ``k{i}`` (``float32 [2 + i % 3, DIM]``)."""
    x = np.random.default_rng(10_000 + i).standard_normal((2 + i % 3, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_or_new(kind: str, path: Path):
    """The index saved at ``path``, or a new empty one when nothing was saved yet."""
    cls = DenseIndex if kind == "dense" else MultiVectorIndex
    try:
        return cls.load(path)
    except IndexFormatError:
        if (path / index_folder.POINTER).exists():
            raise  # a pointer exists, so an index was saved: it must load
        return cls(DIM)


def add_next(index, kind: str) -> None:
    """Add the next document ``k{len}`` (and a padding block so a save takes a while)."""
    i = len(index)
    if kind == "dense":
        index.add(dense_vector(i)[None, :], [f"k{i}"], [{"i": i, "pad": "x" * 2000}])
    else:
        index.add([token_vectors(i)], [f"k{i}"], [{"i": i}])


def save_forever(kind: str, path: str, ready, rounds: int = 10_000) -> None:
    """Load (or create) the index at ``path``, set the event ``ready``, then add one document
    and save, repeatedly (the parent kills this process at a random moment)."""
    folder = Path(path)
    index = open_or_new(kind, folder)
    ready.set()
    for _ in range(rounds):
        add_next(index, kind)
        index.save(folder)


def die_at(kind: str, path: str, step: str) -> None:
    """Add one document and save, killing this process (SIGKILL) at the save step ``step``."""

    def checkpoint(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    folder = Path(path)
    index = open_or_new(kind, folder)
    add_next(index, kind)
    index_folder._checkpoint = checkpoint
    index.save(folder)
