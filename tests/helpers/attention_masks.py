"""Reference masks for attention tests: the dense mask a packed row stands for."""

from __future__ import annotations

import torch


def block_diagonal_mask(n: int, bounds: list[int], causal: bool) -> torch.Tensor:
    """``bool [n, n]``: token i may attend to token j when both lie in the same segment
    ``bounds[s]:bounds[s + 1]`` (and, ``causal``, j <= i)."""
    seg = torch.zeros(n, dtype=torch.long)
    for i in range(len(bounds) - 1):
        seg[bounds[i] : bounds[i + 1]] = i
    mask = seg[:, None] == seg[None, :]
    if causal:
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    return mask
