"""How a multi-vector search picks and scores documents (used by ``MultiVectorIndex``).

Every way ends in exact MaxSim through the one kernel, :func:`vllm_pool.maxsim_kernel.segment_maxsim`:

- :func:`scan_store`: every (allowed) document of the token store, read in fixed-size blocks
  of rows, keeping a running top ``k`` (the flat index and ``exhaustive=True``);
- :func:`candidate_slots`: FAISS neighbours of every query token, their documents as
  candidates, widened when tombstones or a filter leave too few;
- :func:`maxsim_slots`: MaxSim of a query against a given set of documents, in blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vllm_pool.maxsim_kernel import segment_maxsim

from .faiss_index import max_search_k
from .ranking import tie_groups, top_k
from .token_store import TokenStore

Keep = Callable[[int], bool]
"""Whether a document slot may be returned (live, and allowed by the filter)."""

BLOCK_TOKENS = 1 << 16
"""Token vectors decoded and scored at once by :func:`scan_store` and :func:`maxsim_slots`."""


def scan_device(device: str | None, index_type: str) -> torch.device | None:
    """Where exact MaxSim reads the token store: ``None`` = its numpy rows on the CPU.

    With a GPU (``device=None``) or an explicit ``device`` the decoded rows are also held
    on that torch device (fp16 on a GPU) and scanned there; PLAID keeps its own device.
    """
    if index_type == "plaid":
        return None
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else None
    return torch.device(device)


def pad_queries(qs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries ``[Lq_i, D]`` as one zero-padded ``[Q, Lq, D]`` tensor and its ``[Q, Lq]`` mask."""
    lq = max(len(q) for q in qs)
    out = np.zeros((len(qs), lq, qs[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(qs), lq), dtype=bool)
    for i, q in enumerate(qs):
        out[i, : len(q)] = q
        mask[i, : len(q)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def merge_top_k(
    best: tuple[np.ndarray, np.ndarray], slots: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of a running ``best`` top list and new ``(slots, scores)``."""
    return top_k(np.concatenate([best[0], slots]), np.concatenate([best[1], scores]), k)


def scan_store(
    store: TokenStore,
    qs: list[np.ndarray],
    k: int,
    allowed: np.ndarray | None = None,
    device: torch.device | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact MaxSim of every query against every (allowed) stored document; top ``k`` each.

    The rows are decoded and scored in blocks of about :data:`BLOCK_TOKENS`, and only a
    running top ``k`` is kept, so memory does not grow with the number of documents.

    Args:
        store: the token store.
        qs: query token matrices ``[Lq_i, D]``.
        k: hits per query.
        allowed: ``int64`` slots that may be returned (``None``: every stored document).
        device: scan the store's decoded copy held on this torch device (fp16 on a GPU,
            see :meth:`~.token_store.TokenStore.device_rows`) instead of its numpy rows.

    Returns:
        Per query ``(slots, scores)``, best first.
    """
    starts, lengths, slots = store.segments()
    if allowed is not None:
        keep = np.isin(slots, allowed)
        starts, lengths, slots = starts[keep], lengths[keep], slots[keep]
    q, q_mask = pad_queries(qs)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    best = [empty] * len(qs)
    ends = starts + lengths
    held = None if device is None else store.device_rows(device)
    first = 0
    while first < len(starts):
        last = max(int(np.searchsorted(ends, starts[first] + BLOCK_TOKENS, side="right")), first + 1)
        base, stop = int(starts[first]), int(ends[last - 1])
        rows = torch.from_numpy(store.decode_range(base, stop)) if held is None else held[base:stop]  # [t, D]
        scores = segment_maxsim(q, rows, starts[first:last] - base, lengths[first:last], q_mask).cpu().numpy()
        for qi in range(len(qs)):
            best[qi] = merge_top_k(best[qi], slots[first:last], scores[qi], k)
        first = last
    return best


def maxsim_slots(
    store: TokenStore, q: np.ndarray, slots: np.ndarray, device: torch.device | None = None
) -> np.ndarray:
    """MaxSim scores ``[n]`` of one query ``[Lq, D]`` against the documents ``slots``.

    The documents are gathered and decoded in groups of about :data:`BLOCK_TOKENS` rows
    (from the store's copy on ``device`` when given, as :func:`scan_store` reads it).
    """
    out = np.zeros(len(slots), dtype=np.float32)
    qt = torch.from_numpy(np.ascontiguousarray(q))
    ends = np.cumsum(store.lengths(slots))  # [n] token offset where each document ends
    first = 0
    while first < len(slots):
        base = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, base + BLOCK_TOKENS, side="right")), first + 1)
        if device is None:
            rows, lengths = store.decode(slots[first:last])  # [T, D], [n]
            rows = torch.from_numpy(rows)
        else:
            lengths = store.lengths(slots[first:last])
            spans = store.spans(slots[first:last])
            rows = store.device_rows(device)[torch.from_numpy(spans).to(device)]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        out[first:last] = segment_maxsim(qt, rows, starts, lengths)[0].cpu().numpy()
        first = last
    return out


def candidate_slots(
    index: Any,
    qs: list[np.ndarray],
    want: int,
    k_tok: int,
    keep: Keep,
    tombstones: int,
    filtered: bool,
) -> list[np.ndarray | None]:
    """Candidate documents of each query from the ``k_tok`` FAISS neighbours of its tokens
    (and every token tied with a query token's last neighbour, see :func:`neighbours`).

    A query with fewer than ``want`` (``min(k, allowed documents)``) live candidates after
    ``keep`` (a filter, removed documents still in the index, or simply ``k`` close to the
    number of documents) searches again with twice the neighbours. When even a search of
    the whole index cannot give ``want`` (an IVF index only returns vectors of the lists it
    probes) its entry is ``None``: the caller then scores every allowed document exactly.
    All queries of one round share one FAISS search.
    """
    ntotal = max_search_k(index)  # all the vectors, or FAISS GPU's limit (then exact)
    results: list[np.ndarray | None] = [None] * len(qs)
    todo = list(range(len(qs)))
    while todo:
        k_search = min(ntotal, k_tok + (0 if filtered else tombstones))
        labels = neighbours(index, np.concatenate([qs[i] for i in todo]), k_search)  # sum Lq rows
        bounds = np.cumsum([0] + [len(qs[i]) for i in todo])
        retry = []
        for pos, qi in enumerate(todo):
            cand = np.unique(np.concatenate(labels[bounds[pos] : bounds[pos + 1]]))
            live = [int(s) for s in cand if s >= 0 and keep(int(s))]
            if len(live) >= want:
                results[qi] = np.asarray(live, dtype=np.int64)
            elif k_search < ntotal:
                retry.append(qi)  # a filter, tombstones or a large k ate the candidates: widen
        todo, k_tok = retry, 2 * k_tok
    return results


def neighbours(index: Any, x: np.ndarray, k: int) -> list[np.ndarray]:
    """Labels of the ``k`` FAISS neighbours of each row of ``x`` ``[n, D]``, and of every
    vector tied with the ``k``-th (:func:`~.ranking.tie_groups`: one neighbour more than ``k``
    shows whether a row's tie group was cut), as far as the index can answer
    (:func:`~.faiss_index.max_search_k`)."""
    return [labels for _, labels in tie_groups(index.search, x, k, k + 1, max_search_k(index))]
