"""Attention of a packed row without a variable-length kernel: padded buckets, one SDPA each.

Where Flash Attention's varlen kernel does not run (the CPU), a packed row's prompts are
sorted by length and cut into buckets whose padded cost (``prompts x length^2``, lengths
rounded up to a multiple of 16) stays within :data:`WASTE` of the exact cost; each bucket's
queries, keys and values are gathered into a padded ``[prompts, heads, length, dim]`` block
and run through one ``scaled_dot_product_attention`` call with a key mask, and one gather
puts the outputs back in the row's order. A batch of sorted prompts (an offline call) is one
bucket: one SDPA call per layer, as a padded batch makes, instead of one per distinct length.

Lengths are rounded to 16 because PyTorch's CPU flash kernel runs a masked multiple of 16
faster than an exact odd length (measured at 63 -> 64 and 78 -> 80 tokens). The bucket plan
(index tensors, masks) depends on the batch only; it is built by the first layer and kept
in the per-batch ``plan`` dict the runner passes down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

WASTE = 1.3
"""Largest padded / exact attention cost of one bucket."""
ALIGN = 16


@dataclass
class Bucket:
    """Prompts run as one padded block: ``index`` (``[n * length]`` flat positions, padding
    pointing at position 0) and ``mask`` (``[n, 1, 1 or length, length]`` bool, or None)."""

    n: int
    length: int
    index: torch.Tensor
    mask: torch.Tensor | None


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan(
    bounds: list[int], causal: bool, key_mask: torch.Tensor | None, device: torch.device
) -> tuple[list[Bucket], torch.Tensor]:
    """The buckets of a row with segments ``bounds``, and ``positions`` (``[tokens]``): where
    each token's output sits in the buckets' concatenated padded outputs."""
    lens = [b - a for a, b in zip(bounds, bounds[1:])]
    order = sorted(range(len(lens)), key=lambda i: lens[i])
    groups: list[list[int]] = []
    exact = 0
    for i in order:
        size = _aligned(lens[i])
        if groups and (len(groups[-1]) + 1) * size * size > WASTE * (exact + size * size):
            groups.append([])
            exact = 0
        if not groups:
            groups.append([])
        groups[-1].append(i)
        exact += size * size
    buckets, positions, base = [], torch.empty(bounds[-1], dtype=torch.long), 0
    for group in groups:
        length, n = _aligned(lens[group[-1]]), len(group)
        starts = torch.tensor([bounds[i] for i in group])
        steps = torch.arange(length)
        valid = steps < torch.tensor([lens[i] for i in group])[:, None]  # [n, length]
        index = (starts[:, None] + steps).masked_fill_(~valid, 0).flatten()
        flat_valid = valid.flatten()
        positions[index[flat_valid]] = base + flat_valid.nonzero().squeeze(1)
        keys = valid if key_mask is None else valid & key_mask.cpu()[index].view(n, length)
        mask: torch.Tensor | None = keys.view(n, 1, 1, length)
        if causal:
            mask = mask & torch.ones(length, length, dtype=torch.bool).tril()
        elif bool(keys.all()):
            mask = None  # equal lengths, all attended: the unmasked kernel
        buckets.append(Bucket(n, length, index.to(device), None if mask is None else mask.to(device)))
        base += n * length
    return buckets, positions.to(device)


def bucket_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    buckets: list[Bucket],
    positions: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """Attention inside each prompt of a packed row, by padded buckets (see :func:`plan`).

    ``query`` / ``key`` / ``value`` are ``[heads, tokens, dim]`` (as many heads each);
    returns ``[tokens, heads, dim]``.
    """
    q, k, v = (t.transpose(0, 1) for t in (query, key, value))  # [tokens, heads, dim]: rows
    outs = []
    for b in buckets:
        qb, kb, vb = (
            t.index_select(0, b.index).view(b.n, b.length, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)
        )  # [n, heads, length, dim]
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=b.mask, scale=scaling)
        outs.append(o.transpose(1, 2).reshape(b.n * b.length, o.shape[1], o.shape[-1]))
    flat = outs[0] if len(outs) == 1 else torch.cat(outs)
    return flat.index_select(0, positions)
