"""Quantized dense vectors: int8 and binary codes, candidates, then rescoring.

The scheme of Sentence Transformers' ``quantize_embeddings`` / ``semantic_search_faiss``:

- ``int8``: per dimension, 256 steps between the calibration minimum and maximum
  (``floor((x - min) / step)``, clipped, minus 128); 1 byte per dimension.
- ``binary``: one bit per dimension, ``x > 0``, packed (``np.packbits``); ``D / 8`` bytes.

A search finds ``k * rescore_multiplier`` candidates on the codes (of the codes tied at the
last candidate's score, those added first), then rescores them with the float query against
the stored codes, as ST does: the dequantized vector for int8, the bits for binary. Binary
candidates are the smallest Hamming distances to the binarized query (FAISS's
``knn_hamming``, the kernel of ``IndexBinaryFlat``). Int8 candidates come from the float
query scaled by the quantization steps against the codes, which ranks exactly as the
rescored score does (ST ranks them by the quantized query first, a coarser order that the
rescoring then corrects). For binary, ST's score ``q . bits`` and ``q . (2 bits - 1) /
sqrt(D)`` (the cosine of the query with the unit sign vector, which is what :func:`decode`
returns) rank the candidates identically; the second is reported, so scores stay on a
cosine scale. No float copy of the corpus is kept.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .persistence import check_array
from .ranking import tie_groups
from .types import IndexFormatError

logger = logging.getLogger(__name__)

STORAGES = ("fp32", "int8", "binary")
"""Storage of a ``DenseIndex``: float32 vectors, or int8 / binary codes."""


def check_storage(storage: object) -> str:
    """Return ``storage`` checked against :data:`STORAGES`."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return str(storage)


def code_width(storage: str, dim: int) -> int:
    """Columns of one stored row: ``dim`` (fp32 / int8) or ``ceil(dim / 8)`` bytes (binary)."""
    return (dim + 7) // 8 if storage == "binary" else dim


def code_dtype(storage: str) -> type:
    return {"fp32": np.float32, "int8": np.int8, "binary": np.uint8}[storage]


def calibration_ranges(vectors: np.ndarray) -> np.ndarray:
    """``[2, D]`` per-dimension minimum and maximum (ST's int8 calibration).

    Raises:
        ValueError: a single vector (no range to learn), as ST raises.
    """
    if len(vectors) < 2:
        raise ValueError(
            "int8 storage learns its ranges from the first add: add at least 2 vectors "
            "(better 100+), or give calibration_embeddings"
        )
    if len(vectors) < 100:
        logger.warning("int8 ranges computed from %d vectors; 100+ give more stable ranges", len(vectors))
    return np.vstack((vectors.min(axis=0), vectors.max(axis=0))).astype(np.float32)


def _steps(ranges: np.ndarray) -> np.ndarray:
    steps = (ranges[1] - ranges[0]) / 255
    return np.where(steps == 0, 1, steps).astype(np.float32)


def encode(vectors: np.ndarray, storage: str, ranges: np.ndarray | None) -> np.ndarray:
    """Codes of ``[N, D]`` float vectors: ``[N, D]`` int8 or ``[N, ceil(D/8)]`` uint8 bits."""
    if storage == "fp32":
        return vectors.astype(np.float32, copy=False)
    if storage == "binary":
        return np.packbits(vectors > 0, axis=-1)
    assert ranges is not None
    q = np.clip(np.floor((vectors - ranges[0]) / _steps(ranges)), 0, 255)
    return (q - 128).astype(np.int8)


def decode(codes: np.ndarray, storage: str, ranges: np.ndarray | None, dim: int) -> np.ndarray:
    """Float vectors of codes: the dequantized vector (int8), the unit sign vector (binary)."""
    if storage == "fp32":
        return codes.astype(np.float32, copy=False)
    if storage == "binary":
        bits = np.unpackbits(codes, axis=-1)[..., :dim].astype(np.float32)
        return (2 * bits - 1) / np.float32(np.sqrt(dim))
    assert ranges is not None
    return ((codes.astype(np.float32) + 128) * _steps(ranges) + ranges[0]).astype(np.float32)


def candidates(
    q: np.ndarray,
    codes: np.ndarray,
    storage: str,
    ranges: np.ndarray | None,
    k: int,
    slots: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Rows of the ``k`` best codes for each float query ``[Q, D]``: per query ``int64 [k]``,
    best first, ties by slot (as :func:`~.ranking.top_k`), so which of the codes tied at the
    ``k``-th score are candidates (duplicate documents) depends on neither the row order nor
    the kernel: the whole tie group is seen, then cut by slot.

    Binary: smallest Hamming distance to the binarized query (FAISS ``knn_hamming``).
    Int8: largest ``(q * step) . codes``, the order of the exact dequantized score.

    Args:
        slots: ``int64 [N]`` the slot of each row (``None``: the rows are in slot order).
    """
    k = min(k, len(codes))
    slots = np.arange(len(codes)) if slots is None else slots
    if storage == "binary":
        return _hamming_candidates(np.ascontiguousarray(encode(q, storage, None)), codes, k, slots)
    assert ranges is not None
    # q . decode(c) = (q * step) . c + q . (128 * step + min): ranking by (q * step) . c is
    # ranking by the exact score against the dequantized codes, at the cost of one pass
    qc = (q * _steps(ranges)).astype(np.float32)
    scores = np.empty((len(q), len(codes)), dtype=np.float32)
    block = 65536
    for start in range(0, len(codes), block):  # no full float copy of the corpus at once
        scores[:, start : start + block] = qc @ codes[start : start + block].astype(np.float32).T
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # [Q] the k-th best score
    out = []
    for i in range(len(q)):
        rows = np.flatnonzero(~(scores[i] < kth[i]))  # the whole tie group at the k-th
        out.append(rows[np.lexsort((slots[rows], -scores[i, rows]))][:k])
    return out


def _hamming_candidates(bits: np.ndarray, codes: np.ndarray, k: int, slots: np.ndarray) -> list[np.ndarray]:
    """:func:`candidates` of binarized queries: the codes at the ``k`` smallest Hamming
    distances and the rest of the ``k``-th's tie group (:func:`~.ranking.tie_groups`, first
    ``2 k + 16`` neighbours: a tie group of small integer distances seldom reaches that far, and
    the scan costs the same), cut to ``k`` by slot."""
    import faiss

    codes = np.ascontiguousarray(codes)
    groups = tie_groups(lambda b, w: faiss.knn_hamming(b, codes, w), bits, k, 2 * k + 16, len(codes), True)
    return [rows[np.lexsort((slots[rows], dist))][:k] for dist, rows in groups]


def rescore(
    q: np.ndarray, codes: np.ndarray, storage: str, ranges: np.ndarray | None, dim: int
) -> np.ndarray:
    """Scores of one float query ``[D]`` against candidate codes ``[n, w]`` -> ``[n]``."""
    return decode(codes, storage, ranges, dim) @ q


def load_arrays(
    files: Any, path: str | os.PathLike, storage: str, with_floats: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The saved ``(codes, int8 ranges, float rows)`` of a quantized index, checked.

    Raises:
        IndexFormatError: a missing file, a wrong shape or dtype, rows that do not match.
    """
    codes = check_array(files, "codes.npy", 2, code_width(storage, files.dim))
    if codes.dtype != code_dtype(storage):
        raise IndexFormatError(f"{path}/codes.npy: {codes.dtype} codes, expected {storage}")
    ranges = None
    if "ranges.npy" in files.arrays:
        ranges = check_array(files, "ranges.npy", 2, files.dim)
        if len(ranges) != 2:
            raise IndexFormatError(f"{path}/ranges.npy: unexpected shape {list(ranges.shape)}")
        ranges = np.ascontiguousarray(ranges, dtype=np.float32)
    elif storage == "int8" and len(codes):
        raise IndexFormatError(f"{path}/ranges.npy: file missing from the manifest")
    floats = None
    if with_floats:
        floats = check_array(files, "vectors.npy", 2, files.dim)
        if len(floats) != len(codes):
            raise IndexFormatError(f"{path}/vectors.npy: {len(floats)} rows for {len(codes)} codes")
    return codes, ranges, floats
