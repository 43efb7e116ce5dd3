"""PLAID's search stages (Santhanam et al., 2022), vectorized over a PLAID store's arrays.

A query's centroid scores ``S = Q @ C.T`` (``[Lq, C]``) are computed once and every stage
reads them:

1. candidate generation: the ``ncells`` best cells of each query token, their documents
   from the cell -> documents inverted list;
2. centroid interaction with pruning: each candidate's MaxSim with its tokens replaced by
   their centroids, counting only the cells whose best query-token score reaches
   ``centroid_score_threshold`` (the others are skipped); the best ``ndocs`` go on. It is
   computed from the inverted lists of those few cells, not from the documents' tokens;
3. centroid interaction without pruning on those ``ndocs``, from their tokens' centroid ids
   (a row gather of the ``[C, Lq]`` score table); the best ``ndocs / 4`` go on;
4. (in :class:`~.plaid.PlaidStore`) exact MaxSim on the decompressed token vectors.

Every temporary is bounded by ``ncells``, ``ndocs`` and the sizes of the probed cells, not
by the corpus. The defaults are colbert-ai's (``Searcher``'s settings by ``k``).
"""

from __future__ import annotations

import numpy as np
import torch

from vllm_pool.maxsim_kernel import segment_max

from .ranking import top_k


def search_defaults(k: int) -> tuple[int, float, int]:
    """colbert-ai's ``(ncells, centroid_score_threshold, ndocs)`` for ``k`` hits.

    (1, 0.5, 256) up to 10 hits, (2, 0.45, 1024) up to 100, else (4, 0.4, max(4k, 4096)).
    """
    if k <= 10:
        return 1, 0.5, 256
    if k <= 100:
        return 2, 0.45, 1024
    return 4, 0.4, max(4 * k, 4096)


def rows_of(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The row indices ``int64 [sum(lengths)]`` of the spans ``(starts, lengths)``, in order.

    >>> rows_of(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offset = np.asarray(starts, dtype=np.int64) - np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(offset, lengths) + np.arange(total, dtype=np.int64)


def probe(
    cell_scores: torch.Tensor,
    offsets: np.ndarray,
    docs: np.ndarray,
    mask: np.ndarray | None,
    want: int,
    ncells: int,
) -> np.ndarray:
    """Stage 1: the documents (sorted positions) in the ``ncells`` best cells of any query token.

    Args:
        cell_scores: ``[Lq, C]`` query-token x centroid scores.
        offsets: ``int64 [C+1]`` and ``docs``: the inverted list (documents of cell ``c`` are
            ``docs[offsets[c]:offsets[c+1]]``).
        mask: ``bool [n documents]``: the documents a filter allows (``None``: all).
        want: widen the probe (double ``ncells``) until this many candidates are found.
        ncells: cells per query token to start with.
    """
    n_cells = cell_scores.shape[1]
    while True:
        nc = min(ncells, n_cells)
        top = cell_scores.argmax(dim=1) if nc == 1 else cell_scores.topk(nc, dim=1).indices
        cells = np.unique(top.cpu().numpy())
        cand = np.unique(docs[rows_of(offsets[cells], offsets[cells + 1] - offsets[cells])])
        if mask is not None:
            cand = cand[mask[cand]]
        if len(cand) >= want or nc >= n_cells:
            return cand.astype(np.int64)
        ncells = 2 * nc  # a filter or a large k: probe more cells


def active_cells(cell_scores: torch.Tensor, threshold: float) -> np.ndarray:
    """The cells (sorted) whose best query-token score in ``cell_scores [Lq, C]`` reaches ``threshold``."""
    return np.flatnonzero((cell_scores.max(dim=0).values >= threshold).cpu().numpy())


def pruned_scores(
    table: np.ndarray, active: np.ndarray, offsets: np.ndarray, docs: np.ndarray, cand: np.ndarray
) -> np.ndarray:
    """Stage 2: centroid-only MaxSim of the candidates over the ``active`` cells only.

    Args:
        table: ``float32 [C, Lq]`` centroid x query-token scores.
        active: the cells that count (:func:`active_cells`).
        offsets: ``int64 [C+1]`` and ``docs``: the inverted list.
        cand: ``int64 [n]`` sorted candidate documents.

    Returns:
        ``float32 [n]``: ``sum_i max_{c in cells(d), c passes} table[c, i]``; ``-inf`` for a
        candidate without any passing cell.
    """
    out = np.full(len(cand), -np.inf, dtype=np.float32)
    if len(active) == 0 or len(cand) == 0:
        return out
    counts = offsets[active + 1] - offsets[active]
    pair_docs = docs[rows_of(offsets[active], counts)]  # (cell, document) pairs of the active cells
    pair_cells = np.repeat(active, counts)
    pos = np.minimum(np.searchsorted(cand, pair_docs), len(cand) - 1)
    hit = cand[pos] == pair_docs  # keep the pairs of candidate documents
    pos, pair_cells = pos[hit], pair_cells[hit]
    if len(pos) == 0:
        return out
    order = np.argsort(pos, kind="stable")
    pos, pair_cells = pos[order], pair_cells[order]
    first = np.flatnonzero(np.concatenate([[True], pos[1:] != pos[:-1]]))  # each document's first pair
    lengths = np.diff(np.append(first, len(pos)))
    best = segment_max(torch.from_numpy(table[pair_cells]).T, first, lengths)  # [Lq, documents]
    out[pos[first]] = best.sum(dim=0).numpy()
    return out


def centroid_scores(table: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Stage 3: MaxSim of documents whose tokens are replaced by their centroids.

    Args:
        table: ``float32 [C, Lq]`` centroid x query-token scores.
        ids: centroid ids ``[T]`` of the documents' tokens, one document after the other.
        lengths: ``int64 [n]`` tokens per document (each >= 1).

    Returns:
        ``float32 [n]``.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    best = segment_max(torch.from_numpy(table[ids]).T, starts, lengths)  # [Lq, n]
    return best.sum(dim=0).numpy()


def best(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest ``scores`` (all of them when there are at most ``n``), sorted.

    Ties at the cut keep the lowest indices (:func:`~.ranking.top_k`): candidates are
    document positions, in insertion order, so of duplicate documents the first ones go on,
    those the exact stage and the exhaustive scan rank first (not an arbitrary few).

    >>> best(np.array([1.0, 2.0, 1.0, 1.0]), 2).tolist()
    [0, 1]
    """
    if len(scores) <= n:
        return np.arange(len(scores))
    return np.sort(top_k(np.arange(len(scores)), scores, n)[0])
