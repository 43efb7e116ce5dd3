"""Packed-row attention on the CPU by padded buckets (``engine.bucket_attention``).

Checked against dense SDPA over the whole row with a block-diagonal mask (the reference
semantics of per-prompt attention), with scattered and sorted lengths, causal, with key
masks, and through ``packing.varlen_attention`` as the model calls it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from attention_masks import block_diagonal_mask
from vllm_pool.engine import bucket_attention, packing


def _reference(q, k, v, bounds, causal, key_mask=None):
    """``[heads, tokens, dim]`` inputs; dense SDPA with a block-diagonal (causal, key) mask."""
    mask = block_diagonal_mask(q.shape[1], bounds, causal)
    if key_mask is not None:
        mask &= key_mask[None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(0, 1)


LENGTHS = [
    [5, 5, 5],  # equal: no mask
    [3, 17, 1, 40, 16, 2, 33],  # scattered, several buckets
    [69, 70, 70, 71, 72],  # an offline batch: one bucket
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_buckets_give_per_prompt_attention(lengths, causal):
    torch.manual_seed(0)
    bounds = np.cumsum([0, *lengths]).tolist()
    q, k, v = (torch.randn(3, bounds[-1], 8) for _ in range(3))
    buckets, positions = bucket_attention.plan(bounds, causal, None, q.device)
    got = bucket_attention.bucket_sdpa(q, k, v, buckets, positions, None)
    torch.testing.assert_close(got, _reference(q, k, v, bounds, causal), atol=1e-5, rtol=1e-5)


def test_key_mask_leaves_positions_unattended():
    torch.manual_seed(0)
    masks = [[1, 1, 0, 0], [1, 1, 1], [1, 0, 0, 0, 0], [1] * 20]
    bounds = np.cumsum([0, *map(len, masks)]).tolist()
    key_mask = packing.key_mask(masks)[0]["packed_key_mask"]
    q, k, v = (torch.randn(2, bounds[-1], 8) for _ in range(3))
    buckets, positions = bucket_attention.plan(bounds, False, key_mask, q.device)
    got = bucket_attention.bucket_sdpa(q, k, v, buckets, positions, None)
    torch.testing.assert_close(got, _reference(q, k, v, bounds, False, key_mask), atol=1e-5, rtol=1e-5)


def test_plan_pads_to_aligned_lengths_within_the_waste_bound():
    bounds = np.cumsum([0, 69, 70, 71, 72]).tolist()
    (bucket,), positions = bucket_attention.plan(bounds, False, None, torch.device("cpu"))
    assert (bucket.n, bucket.length) == (4, 80) and bucket.mask is not None
    rows = positions.tolist()  # each token's row in the padded [4 x 80] output
    assert rows == [p * 80 + t for p, n in enumerate([69, 70, 71, 72]) for t in range(n)]
    spread = np.cumsum([0, 200, 4, 100, 5, 6]).tolist()
    buckets, _ = bucket_attention.plan(spread, False, None, torch.device("cpu"))
    assert [(b.n, b.length) for b in buckets] == [(3, 16), (1, 112), (1, 208)]  # short ones together


def test_equal_lengths_run_unmasked():
    bounds = [0, 16, 32, 48]
    (bucket,), _ = bucket_attention.plan(bounds, False, None, torch.device("cpu"))
    assert bucket.mask is None and bucket.length == 16


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_attention_plans_once_per_batch(causal):
    """The model's layers share one plan (GQA heads repeated before it runs)."""
    torch.manual_seed(0)
    lengths = [3, 5, 3, 3, 2, 5, 1]
    bounds = np.cumsum([0, *lengths]).tolist()
    q = torch.randn(1, 4, bounds[-1], 8)
    k, v = torch.randn(1, 2, bounds[-1], 8), torch.randn(1, 2, bounds[-1], 8)
    module = torch.nn.Module()
    module.is_causal = causal
    kwargs = packing.attention_kwargs(bounds, max(lengths))
    kwargs["cu_seq_lens_q"] = torch.tensor(bounds)
    first, _ = packing.varlen_attention(module, q, k, v, None, **kwargs)
    plan = kwargs["packed_plan"]["buckets"]
    second, _ = packing.varlen_attention(module, q, k, v, None, **kwargs)
    assert kwargs["packed_plan"]["buckets"] is plan
    kr, vr = k[0].repeat_interleave(2, dim=0), v[0].repeat_interleave(2, dim=0)
    want = _reference(q[0], kr, vr, bounds, causal)
    torch.testing.assert_close(first[0], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, first)
