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
    qm = None if query_mask is None else query_mask.to(device=device, dtype=torch.float32).reshape(-1)
    out = torch.zeros((len(starts), n_q), dtype=torch.float32, device=device)  # [n, Q]
    if len(starts) == 0:
        return out.T
    block = max(1, BLOCK_ELEMENTS // max(1, n_q * lq))
    ends = starts + lengths
    first = 0
    while first < len(starts):
        # documents [first, last) whose span fits in one block (at least one document)
        last = int(np.searchsorted(ends, starts[first] + block, side="right"))
        last = max(last, first + 1)
        base, stop = int(starts[first]), int(ends[last - 1])
        sim = tokens[base:stop].to(compute) @ q.T  # [t, Q*Lq]
        if compute != torch.float32:
            sim = sim.float()
        if token_mask is not None:
            sim = sim.masked_fill(~token_mask[base:stop, None].to(device), float("-inf"))
        bounds = np.empty(2 * (last - first), dtype=np.int64)  # segments: doc, gap, doc, ..., doc
        bounds[0::2] = starts[first:last] - base
        bounds[1::2] = ends[first:last] - base
        best = torch.segment_reduce(sim, "max", offsets=torch.from_numpy(bounds).to(device), axis=0)
        best = best[0::2]  # [docs, Q*Lq] (the odd segments are the gaps between documents)
        best = torch.where(torch.isinf(best), torch.zeros_like(best), best)
        if qm is not None:
            best = best * qm
        out[first:last] = best.reshape(-1, n_q, lq).sum(dim=-1)
        first = last
    return out.T
