"""The one order of search results: score descending, then slot (insertion order) ascending.

Tied scores are common (duplicate chunks), so which of the tied documents a search returns
must not depend on its path (FAISS, an exact scan, a filter, a block-wise merge). Every
path ranks with :func:`top_k`; FAISS paths use :func:`faiss_top_k`, which widens a FAISS
search until the tie group at the ``k``-th score is complete (FAISS's own inner-product
heap keeps an arbitrary subset of the documents tied at its cut-off).

This is the order FAISS gives on a flat L2 index (``IndexFlatL2``): distance ascending,
then the position of the vector (the order it was added) ascending.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from .faiss_index import max_search_k


def top_k(slots: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ``(slots, scores)``: score descending, ties by slot ascending.

    Args:
        slots: ``int64 [n]`` document slots (any order).
        scores: ``float [n]`` their scores.
        k: how many to keep (>= 1).

    Returns:
        ``(slots, scores)`` of at most ``k`` documents, best first.

    >>> top_k(np.array([5, 3, 9, 1]), np.array([1.0, 2.0, 1.0, 1.0]), 3)[0]
    array([3, 1, 5])
    """
    if len(slots) == 0:
        return slots, scores
    k = min(k, len(slots))
    cand = np.arange(len(slots))
    if k < len(slots):  # every element tied with the k-th score, not an arbitrary few of them
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        if not np.isnan(kth):
            cand = np.flatnonzero(scores >= kth)
    order = cand[np.lexsort((slots[cand], -scores[cand]))][:k]
    return slots[order], scores[order]


def faiss_top_k(
    index: Any, q: np.ndarray, k: int, want: int, k_search: int, usable: Callable[[int], bool]
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """The best ``k`` usable documents of each query from a FAISS index, in :func:`top_k` order.

    A query searches again with twice the neighbours while it has fewer than ``want`` usable
    hits (removed documents still in the index, a filter) or while the last neighbour FAISS
    returned ties with its ``k``-th hit (more documents of that score may be left out).

    Args:
        index: a FAISS index whose labels are document slots.
        q: ``float32 [Q, D]`` queries.
        k: hits per query.
        want: ``min(k, documents a query may return)``.
        k_search: neighbours asked for first (more than ``k`` to see past the ``k``-th).
        usable: whether a label (``-1``: none) may be returned.

    Returns:
        Per query ``(slots, scores)``, or ``None`` where even the widest search of the index
        cannot give ``want`` hits or a complete tie group (IVF probes some lists only; a GPU
        index returns at most :data:`~.faiss_index.GPU_MAX_K`): the caller scores those exactly.
    """
    ntotal = max_search_k(index)
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(q)
    todo = list(range(len(q)))
    k_search = min(ntotal, k_search)
    while todo:
        scores, labels = index.search(q[todo], max(k_search, 1))  # [Q', k'], [Q', k']
        retry = []
        for row, qi in enumerate(todo):
            keep = np.fromiter((usable(int(s)) for s in labels[row]), dtype=bool, count=labels.shape[1])
            slots, vals = top_k(labels[row][keep], scores[row][keep], k)
            cut = len(slots) == k and labels[row, -1] >= 0 and scores[row, -1] >= vals[-1]
            if len(slots) >= want and not cut:
                out[qi] = slots, vals
            elif k_search < ntotal:
                retry.append(qi)
            elif len(slots) >= want and ntotal == index.ntotal:  # every vector returned: complete
                out[qi] = slots, vals
        todo, k_search = retry, min(ntotal, 2 * k_search)
    return out


Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``(rows [n, D], width) -> (values [n, width], labels [n, width])``, best first (``-1``: none)."""


def tie_groups(
    search: Search, x: np.ndarray, k: int, width: int, ntotal: int, distances: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of ``x``: ``(values, labels)`` of its ``k`` best neighbours and of every other
    one tied with the ``k``-th (a FAISS search keeps an arbitrary few of those at its cut-off,
    so duplicate documents would come back or not by chance).

    ``width`` neighbours (more than ``k``) show whether a row's tie group was cut; only those
    rows search again, twice as wide each time, as far as ``ntotal`` (all ``search`` can give).

    Args:
        search: the nearest-neighbour search.
        x: the query rows.
        k: neighbours wanted (at most ``ntotal``).
        width: neighbours asked for first.
        ntotal: the most neighbours ``search`` returns.
        distances: the values are distances (smaller is better), not similarities.
    """
    as_good = operator.le if distances else operator.ge
    width = min(ntotal, width)
    values, labels = search(x, width)
    bound = values[:, k - 1]  # [n] the k-th value of each row
    found = list(zip(values, labels, strict=True))
    cut = np.flatnonzero((labels[:, -1] >= 0) & as_good(values[:, -1], bound)) if width < ntotal else []
    while len(cut):
        width = min(ntotal, 2 * width)
        more_values, more = search(x[cut], width)  # [c, width]
        for j, r in enumerate(cut):
            found[r] = more_values[j], more[j]
        still = (more[:, -1] >= 0) & as_good(more_values[:, -1], bound[cut])
        cut = cut[still] if width < ntotal else []
    kept = [(lab >= 0) & as_good(v, b) for (v, lab), b in zip(found, bound, strict=True)]
    return [(v[m], lab[m]) for (v, lab), m in zip(found, kept, strict=True)]
