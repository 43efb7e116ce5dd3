"""Checking and converting the vectors callers give: numpy or torch, one matrix or many."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def as_float32_matrix(x: object, dim: int | None, name: str) -> np.ndarray:
    """Validate and convert ``x`` to a C-contiguous ``float32 [n, dim]`` array."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, dim], got shape {list(arr.shape)}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, index dimension is {dim}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by row
        out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():  # checked after the cast: float64 1e39 is inf in float32
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ValueError(
            f"{name}[{row}] contains NaN or infinite values as float32 "
            f"(finite values of magnitude at most {float(np.finfo(np.float32).max):.4g} only)"
        )
    return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalization (zero rows stay zero); same dtype as a floating ``x``.

    The norms are computed in float64, so rows whose float32 squares overflow (``1e20``) or
    underflow (``1e-30``) still come out as unit vectors.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))[:, None]  # [n, 1]
    norms[norms == 0] = 1.0
    if not np.issubdtype(x.dtype, np.floating):
        return x / norms
    info = np.finfo(x.dtype)
    if np.all((norms >= info.tiny) & (norms <= info.max)):  # divide in x's own precision
        return x / norms.astype(x.dtype)
    return (x / norms).astype(x.dtype)


def is_single_matrix(x: Any) -> bool:
    return getattr(x, "ndim", None) == 2


def token_matrices(x: Any, mask: Any, dim: int | None, name: str) -> list[np.ndarray]:
    """Validate ``x`` (list of ``[L_i, D]`` or padded ``[N, L, D]`` + mask) into fp32 arrays."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        if x.ndim != 3:
            raise ValueError(f"{name} as one array must be [N, L, D], got {list(x.shape)}")
        if mask is not None:
            mask = np.asarray(mask).astype(bool)
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask shape {list(mask.shape)} does not match {name} {list(x.shape[:2])}")
            x = [row[m] for row, m in zip(x, mask, strict=True)]
        else:
            x = list(x)
    elif mask is not None:
        raise ValueError(f"a mask is only used with a padded [N, L, D] {name} array")
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise TypeError(f"{name} must be a list of [L, D] arrays or an [N, L, D] array")
    out = []
    for i, item in enumerate(x):
        arr = as_float32_matrix(item, dim, f"{name}[{i}]")
        if len(arr) == 0:
            raise ValueError(f"{name}[{i}] has no token vectors")
        if dim is None:
            dim = arr.shape[1]
        out.append(arr)
    return out
