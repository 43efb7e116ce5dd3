"""The search of a quantized :class:`~.dense.DenseIndex` (``storage="int8"`` or ``"binary"``).

:func:`check_settings` checks the settings of that search (the codes are searched
exhaustively, so ``index_type="flat"``; ``rescore_multiplier``; ``rescore``), and
:func:`search_codes` runs it: ``k * rescore_multiplier`` candidates on the stored codes,
rescored with the float query against their codes (``rescore="codes"``, as Sentence
Transformers does) or against their float rows kept on disk (``rescore="float"``: exact
scores). The codes themselves, their candidates and rescoring: :mod:`.quantization`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import quantization
from .mapped_rows import MappedRows
from .ranking import top_k


def check_settings(storage: str, index_type: str, rescore_multiplier: int, rescore: str) -> str:
    """Check the settings of the search; return ``storage`` (one of :data:`~.quantization.STORAGES`).

    Raises:
        ValueError: an unknown storage, a quantized one with an index type other than
            ``"flat"``, a ``rescore_multiplier`` that is not an int >= 1, a ``rescore`` other
            than ``"codes"`` or ``"float"``.
    """
    storage = quantization.check_storage(storage)
    if storage != "fp32" and str(index_type).lower() != "flat":
        raise ValueError(f"storage={storage!r} searches its codes exhaustively: use index_type='flat'")
    multiplier = rescore_multiplier
    if isinstance(multiplier, bool) or not isinstance(multiplier, int) or multiplier < 1:
        raise ValueError(f"rescore_multiplier must be an int >= 1, got {rescore_multiplier!r}")
    if rescore not in ("codes", "float"):
        raise ValueError(f"rescore must be 'codes' or 'float', got {rescore!r}")
    return storage


def search_codes(
    q: np.ndarray,
    k: int,
    vectors: np.ndarray,
    row_of: dict[int, int],
    n_rows: int,
    pool: np.ndarray | None,
    floats: MappedRows | None,
    config: dict[str, Any],
    ranges: np.ndarray | None,
) -> list[list[tuple[int, float]]]:
    """The best ``k`` ``(slot, score)`` of each float query ``[Q, D]``: score descending,
    ties by slot (insertion order), as every search path.

    Args:
        q: the float queries (normalized when the index normalizes its vectors).
        k: hits per query.
        vectors: the index's rows of codes (the rows from ``n_rows`` on are spare capacity).
        row_of: slot -> row of ``vectors`` of every live document, in row order.
        n_rows: rows of ``vectors`` written (live ones, and garbage of removed documents).
        pool: the slots to search; ``None``: every live document, only when no row is
            garbage (the codes are then read in place, without a copy).
        floats: the float rows of ``rescore="float"`` (exact scores); ``None``: the
            candidates are rescored against their codes.
        config: the index's config (``storage``, ``rescore_multiplier``).
        ranges: the int8 calibration ranges (``None`` for binary codes).
    """
    storage = config["storage"]
    if pool is None:  # no garbage rows: no copy
        slots = np.fromiter(row_of.keys(), np.int64, len(row_of))  # in row order
        row_ids = np.arange(n_rows)
        codes = vectors[:n_rows]
    else:
        slots = pool
        row_ids = np.asarray([row_of[int(s)] for s in slots], dtype=np.int64)
        codes = vectors[row_ids]
    if len(slots) == 0:
        return [[] for _ in range(len(q))]
    rows = quantization.candidates(q, codes, storage, ranges, k * config["rescore_multiplier"], slots)
    results = []
    for qi, cand in enumerate(rows):
        if floats is not None:  # exact: the float rows of the candidates, from disk
            scores = floats.take(row_ids[cand]) @ q[qi]
        else:
            scores = quantization.rescore(q[qi], codes[cand], storage, ranges, q.shape[1])
        top, vals = top_k(slots[cand], scores, k)  # ties: insertion order, as every path
        results.append(list(zip(top.tolist(), vals.tolist(), strict=True)))
    return results
