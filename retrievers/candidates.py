"""How a multi-vector search picks and scores documents (used by ``MultiVectorIndex``).

Three ways, all ending in exact MaxSim:

- :func:`scan_flat_rows`: a flat index's rows read in place, one GEMM for every document;
- :func:`candidate_slots`: FAISS neighbours of every query token, their documents as
  candidates, widened when tombstones or a filter leave too few;
- :func:`maxsim_slots`: MaxSim of a query against a given set of documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .token_store import TokenStore

Keep = Callable[[int], bool]
"""Whether a document slot may be returned (live, and allowed by the filter)."""


def maxsim_slots(store: TokenStore, q: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """MaxSim scores ``[n]`` of one query ``[Lq, D]`` against the documents ``slots``."""
    scores = None
    if store.span_tokens(slots) * 4 > store.num_vectors:  # many documents: score in place, no copies
        scores = store.maxsim_in_place(q, slots)
    if scores is None:
        tokens, lengths = store.decode(slots)  # [T, D], [n]
        sim = q @ tokens.T  # [Lq, T]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        scores = np.maximum.reduceat(sim, starts, axis=1).sum(axis=0)
    return scores


def scan_flat_rows(
    q: np.ndarray, vectors: np.ndarray, row_slots: np.ndarray, keep: Keep
) -> tuple[np.ndarray, np.ndarray]:
    """MaxSim of ``q`` against every document of a flat index, read in place.

    ``vectors`` ``[N, D]`` are the index's rows and ``row_slots`` ``[N]`` their documents
    (each document's rows contiguous): one GEMM, then a max per document segment.
    Returns the kept ``(slots, scores)``.
    """
    sim = q @ vectors.T  # [Lq, N]
    starts = np.flatnonzero(np.r_[True, row_slots[1:] != row_slots[:-1]])
    scores = np.maximum.reduceat(sim, starts, axis=1).sum(axis=0)  # [segments]
    slots = row_slots[starts]
    mask = np.fromiter((keep(int(s)) for s in slots), dtype=bool, count=len(slots))
    return slots[mask], scores[mask]


def candidate_slots(
    index: Any, qs: list[np.ndarray], k: int, k_tok: int, keep: Keep, tombstones: int, filtered: bool
) -> list[np.ndarray]:
    """Candidate documents of each query from the ``k_tok`` FAISS neighbours of its tokens.

    A query whose candidates fall short of ``k`` after ``keep`` (a filter, or removed
    documents still in the index) searches again with twice the neighbours, until the
    whole index is covered. All queries of one round share one FAISS search.
    """
    ntotal = index.ntotal
    results: list[np.ndarray | None] = [None] * len(qs)
    todo = list(range(len(qs)))
    while todo:
        k_search = min(ntotal, k_tok + (0 if filtered else tombstones))
        _, labels = index.search(np.concatenate([qs[i] for i in todo]), k_search)  # [sum Lq, k']
        bounds = np.cumsum([0] + [len(qs[i]) for i in todo])
        retry = []
        for pos, qi in enumerate(todo):
            cand = np.unique(labels[bounds[pos] : bounds[pos + 1]])
            live = [int(s) for s in cand if s >= 0 and keep(int(s))]
            if len(live) < k and k_search < ntotal and (filtered or not live):
                retry.append(qi)  # a filter or tombstones ate the candidates: widen
                continue
            results[qi] = np.asarray(live, dtype=np.int64)
        todo, k_tok = retry, 2 * k_tok
    return results  # type: ignore[return-value]


def top_k(slots: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ``(slots, scores)``, best first (ties keep their order)."""
    if len(slots) == 0:
        return slots, scores
    k = min(k, len(slots))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return slots[top], scores[top]
