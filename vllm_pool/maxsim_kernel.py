"""The one MaxSim kernel: late-interaction scores of queries against variable-length documents.

Documents are spans of one flat token matrix (the ``cu_seqlens`` layout the engine uses for
hidden states): document ``i`` is ``tokens[starts[i] : starts[i] + lengths[i]]``. The kernel
multiplies the queries with fixed-size blocks of tokens and takes a segmented max per
document, so its temporaries stay bounded whatever the number of documents. It is torch
only (no FAISS, no engine) so that both :mod:`vllm_pool.retrievers` and the engine's
BGE-M3 head use it, on the CPU or on a GPU.

``score[q, n] = sum_i query_mask[q, i] * max_{j in doc n, token_mask[j]} <query[q, i], token[j]>``;
a document without tokens (or with all of them masked) scores 0.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK_ELEMENTS = 1 << 22
"""Upper bound on the ``[block tokens, Q * Lq]`` similarity block computed at once (fp32)."""


def as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as a tensor (numpy arrays are shared, not copied)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def segment_maxsim(
    queries: torch.Tensor,
    tokens: torch.Tensor,
    starts: np.ndarray,
    lengths: np.ndarray,
    query_mask: torch.Tensor | None = None,
    token_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaxSim of ``Q`` queries against the documents ``(starts, lengths)`` of ``tokens``.

    Args:
        queries: ``[Q, Lq, D]`` (or ``[Lq, D]``) query token vectors.
        tokens: ``[T, D]`` token vectors of the documents (any float dtype, any device; the
            products are computed in fp32 on the CPU and in the tokens' dtype with fp32
            output on a GPU).
        starts: ``int64 [n]`` first token of each document, ascending, spans not overlapping.
        lengths: ``int64 [n]`` tokens of each document (0 allowed: the document scores 0).
        query_mask: ``[Q, Lq]`` bool, ``True`` for real query tokens (default: all).
        token_mask: ``[T]`` bool, ``True`` for tokens that count (default: all).

    Returns:
        ``float32 [Q, n]`` scores on the device of ``tokens``.

    Example:
        >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> t = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.0, 0.0]])
        >>> segment_maxsim(q, t, np.array([0, 2]), np.array([2, 2])).tolist()
        [[1.5, 1.0]]
    """
    if queries.ndim == 2:
        queries = queries[None]
    n_q, lq, dim = queries.shape
    if tokens.ndim != 2 or tokens.shape[1] != dim:
        raise ValueError(f"tokens must be [T, {dim}], got {list(tokens.shape)}")
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    device = tokens.device
    cuda = device.type == "cuda"
    compute = tokens.dtype if cuda and tokens.dtype in (torch.float16, torch.bfloat16) else torch.float32
    q = queries.to(device=device, dtype=compute).reshape(n_q * lq, dim)  # [Q*Lq, D]
    qm = None if query_mask is None else query_mask.to(device=device, dtype=torch.float32).reshape(-1, 1)
    out = torch.zeros((n_q, len(starts)), dtype=torch.float32, device=device)  # [Q, n]
    block = max(1, BLOCK_ELEMENTS // max(1, n_q * lq))
    ends = starts + lengths
    first = 0
    while first < len(starts):
        # documents [first, last) whose span fits in one block (at least one document)
        last = int(np.searchsorted(ends, starts[first] + block, side="right"))
        last = max(last, first + 1)
        base, stop = int(starts[first]), int(ends[last - 1])
        sim = q @ tokens[base:stop].to(compute).T  # [Q*Lq, t]
        if compute != torch.float32:
            sim = sim.float()
        if token_mask is not None:
            sim = sim.masked_fill(~token_mask[None, base:stop].to(device), float("-inf"))
        best = segment_max(sim, starts[first:last] - base, lengths[first:last])  # [Q*Lq, docs]
        if qm is not None:
            best = best * qm
        out[:, first:last] = best.reshape(n_q, lq, -1).sum(dim=1)
        first = last
    return out


def segment_max(sim: torch.Tensor, starts: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """The max over each document's columns of a similarity matrix: the "Max" of MaxSim.

    Args:
        sim: ``[R, T]`` similarities of ``R`` query tokens with ``T`` document tokens.
        starts: ``int64 [n]`` first column of each document, ascending, spans not overlapping.
        lengths: ``int64 [n]`` columns of each document.

    Returns:
        ``float32 [R, n]``: per query token and document, the best similarity (0 for a
        document without columns, or whose columns are all ``-inf``). Summing it over the
        query tokens gives the MaxSim score.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if sim.device.type == "cpu":  # numpy's reduceat: one pass, no thread hand-offs per small op
        return torch.from_numpy(_segment_max_numpy(sim.numpy(), starts, lengths))
    if len(starts) == 0:
        return sim.new_zeros((sim.shape[0], 0))
    bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)  # segments: gap, doc, gap, ..., doc, tail
    bounds[0] = 0
    bounds[1:-1:2] = starts
    bounds[2:-1:2] = starts + lengths
    bounds[-1] = sim.shape[1]
    offsets = torch.from_numpy(bounds).to(sim.device)
    best = torch.segment_reduce(sim.T.contiguous(), "max", offsets=offsets, axis=0)
    best = best[1:-1:2].T  # the even segments are the columns between, before and after documents
    return torch.nan_to_num(best, neginf=0.0)


def _segment_max_numpy(sim: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    out = np.zeros((sim.shape[0], len(starts)), dtype=np.float32)
    full = lengths > 0
    if full.any():
        bounds = np.empty(2 * int(full.sum()), dtype=np.int64)  # doc, gap, doc, ..., doc[, tail]
        bounds[0::2] = starts[full]
        bounds[1::2] = starts[full] + lengths[full]
        if bounds[-1] >= sim.shape[1]:
            bounds = bounds[:-1]  # the last document runs to the end
        out[:, full] = np.maximum.reduceat(sim, bounds, axis=1)[:, 0::2]
    out[np.isneginf(out)] = 0.0  # documents whose tokens are all masked
    return out
