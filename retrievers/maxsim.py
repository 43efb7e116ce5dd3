"""Late-interaction (ColBERT) MaxSim scoring of padded batches, with masks.

A thin front over :func:`vllm_pool.maxsim_kernel.segment_maxsim`, the one MaxSim kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vllm_pool.maxsim_kernel import as_tensor as _as_tensor
from vllm_pool.maxsim_kernel import segment_maxsim

ArrayLike = np.ndarray | torch.Tensor


def maxsim(
    query_tokens: ArrayLike,
    doc_tokens: ArrayLike,
    query_mask: ArrayLike | None = None,
    doc_mask: ArrayLike | None = None,
) -> ArrayLike:
    """Score every query against every document with ColBERT's MaxSim.

    ``score[q, n] = sum_i query_mask[q, i] * max_{j: doc_mask[n, j]} <query[q, i], doc[n, j]>``.
    Products are accumulated in fp32 even for fp16 / bf16 inputs. A document whose tokens
    are all masked scores 0.

    Args:
        query_tokens: ``[Q, Lq, D]`` query token vectors (padded).
        doc_tokens: ``[N, Ld, D]`` document token vectors (padded).
        query_mask: ``[Q, Lq]`` bool / 0-1, ``True`` for real tokens; ``None`` = all real.
        doc_mask: ``[N, Ld]`` bool / 0-1, ``True`` for real tokens; ``None`` = all real.

    Returns:
        ``[Q, N]`` fp32 scores: a numpy array when ``query_tokens`` is one, else a tensor.

    Example:
        >>> q = np.array([[[1.0, 0.0], [0.0, 1.0]]])           # [1, 2, 2]
        >>> d = np.array([[[1.0, 0.0], [0.5, 0.5]],            # [2, 2, 2]
        ...               [[0.0, 1.0], [0.0, 0.0]]])
        >>> maxsim(q, d).tolist()
        [[1.5, 1.0]]
        >>> maxsim(q, d, query_mask=np.array([[True, False]])).tolist()
        [[1.0, 0.0]]
    """
    as_numpy = isinstance(query_tokens, np.ndarray)
    q = _as_tensor(query_tokens, "query_tokens")
    d = _as_tensor(doc_tokens, "doc_tokens")
    if q.ndim != 3 or d.ndim != 3:
        raise ValueError(
            f"query_tokens must be [Q, Lq, D] and doc_tokens [N, Ld, D], "
            f"got {tuple(q.shape)} and {tuple(d.shape)}"
        )
    if q.shape[2] != d.shape[2]:
        raise ValueError(f"dimension mismatch: queries have {q.shape[2]}, documents {d.shape[2]}")
    n_q, lq, _ = q.shape
    n_d, ld, dim = d.shape
    qm = _mask(query_mask, (n_q, lq), "query_mask", d.device)  # [Q, Lq]
    dm = _mask(doc_mask, (n_d, ld), "doc_mask", d.device)  # [N, Ld]
    starts = np.arange(n_d, dtype=np.int64) * ld  # the padded documents as spans of one [N*Ld, D]
    lengths = np.full(n_d, ld, dtype=np.int64)
    out = segment_maxsim(q, d.reshape(n_d * ld, dim), starts, lengths, qm, dm.reshape(-1))  # [Q, N]
    return out.cpu().numpy() if as_numpy else out


def _mask(mask: ArrayLike | None, shape: tuple[int, int], name: str, device: torch.device) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    m = _as_tensor(mask, name).to(device)
    if tuple(m.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(m.shape)}")
    return m.bool()


def pad_token_vectors(
    arrays: Sequence[ArrayLike], dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length token matrices into one batch.

    Args:
        arrays: ``N`` arrays of shape ``[L_i, D]`` (numpy or torch), same ``D``.
        dtype: output dtype; default: the first array's dtype.

    Returns:
        ``(tokens, mask)``: ``[N, max L_i, D]`` zero-padded and ``[N, max L_i]`` bool.

    Example:
        >>> t, m = pad_token_vectors([np.ones((2, 3)), np.ones((1, 3))])
        >>> tuple(t.shape), m.tolist()
        ((2, 2, 3), [[True, True], [True, False]])
    """
    if len(arrays) == 0:
        raise ValueError("pad_token_vectors needs at least one array")
    tensors = [_as_tensor(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    dim = tensors[0].shape[-1]
    for i, t in enumerate(tensors):
        if t.ndim != 2 or t.shape[1] != dim:
            raise ValueError(f"arrays[{i}] must be [L, {dim}], got {list(t.shape)}")
    dtype = dtype or tensors[0].dtype
    max_len = max(t.shape[0] for t in tensors)
    out = torch.zeros((len(tensors), max_len, dim), dtype=dtype)  # [N, L, D]
    mask = torch.zeros((len(tensors), max_len), dtype=torch.bool)  # [N, L]
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t.to(dtype)
        mask[i, : t.shape[0]] = True
    return out, mask
