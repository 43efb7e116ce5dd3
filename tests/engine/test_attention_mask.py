"""Token-id prompts with an ``attention_mask``: positions the model does not attend to still
get a vector (ColBERT's query expansion with ``attend_to_expansion_tokens=False``).

Compared with transformers on the same weights, padded and packed, alone and in batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel
from vllm_pool.engine import packing

from vllm_pool import LLM

PROMPTS = [
    ([2, 40, 41, 42, 3, 4, 4, 4], [1, 1, 1, 1, 1, 0, 0, 0]),
    ([2, 50, 3, 4, 4], [1, 1, 1, 0, 0]),
    ([2, 60, 61, 62, 63, 64, 3], None),
    ([2, 70, 71, 3, 4, 4, 4, 4, 4, 4], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
]


def _reference(folder, prompts) -> list[np.ndarray]:
    model = AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for ids, mask in prompts:
            m = torch.tensor([mask if mask is not None else [1] * len(ids)])
            h = model(input_ids=torch.tensor([ids]), attention_mask=m).last_hidden_state[0]
            out.append(F.normalize(h, dim=-1).numpy())
    return out


def _prompts(prompts):
    return [
        {"prompt_token_ids": ids, **({"attention_mask": m} if m is not None else {})} for ids, m in prompts
    ]


@pytest.mark.parametrize("packed", [False, True])
def test_masked_positions_match_transformers(tiny_bert, packed):
    llm = LLM(str(tiny_bert), packed=packed, max_num_batched_tokens=64)
    assert llm.runner.packed is packed
    want = _reference(tiny_bert, PROMPTS)
    batched = llm.encode(_prompts(PROMPTS), pooling_task="token_embed", use_tqdm=False)
    alone = [llm.encode(p, pooling_task="token_embed", use_tqdm=False)[0] for p in _prompts(PROMPTS)]
    shuffled = llm.encode(_prompts(PROMPTS[::-1]), pooling_task="token_embed", use_tqdm=False)[::-1]
    for outs in (batched, alone, shuffled):
        for got, ref in zip(outs, want):
            assert got.outputs.data.shape == ref.shape  # every position has a vector
            np.testing.assert_allclose(got.outputs.data.numpy(), ref, atol=2e-5)
    # the mask changes the vectors: attending to the masks gives other ones
    full = llm.encode({"prompt_token_ids": PROMPTS[0][0]}, pooling_task="token_embed", use_tqdm=False)
    assert not np.allclose(full[0].outputs.data.numpy(), want[0], atol=1e-3)


def test_flash_path_gathers_attended_keys():
    """The CUDA varlen kernel gets keys cut to the attended positions (a fake kernel here)."""
    torch.manual_seed(0)
    masks = [[1, 1, 0, 0], [1, 1, 1], [1, 0, 0, 0, 0]]
    sizes = [len(m) for m in masks]
    bounds = np.cumsum([0, *sizes]).tolist()
    heads, dim = 2, 8
    q, k, v = (torch.randn(heads, bounds[-1], dim) for _ in range(3))
    calls = []

    def fake_flash(q_, k_, v_, cu_q, cu_k, max_q, max_k, is_causal=False):  # [tokens, heads, dim]
        calls.append((cu_q.tolist(), cu_k.tolist(), max_q, max_k))
        out = []
        for i in range(len(cu_q) - 1):
            qs = q_[cu_q[i] : cu_q[i + 1]].transpose(0, 1)
            ks, vs = (t[cu_k[i] : cu_k[i + 1]].transpose(0, 1) for t in (k_, v_))
            out.append(F.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1))
        return torch.cat(out)

    tensors, longest_k = packing.key_mask(masks)
    key_index = tensors["packed_key_index"]
    got = packing.call_flash(
        fake_flash,
        q,
        k.index_select(1, key_index),
        v.index_select(1, key_index),
        torch.tensor(bounds),
        max(sizes),
        None,
        False,
        tensors["cu_seq_lens_k"],
        longest_k,
    )
    want = packing._segments_sdpa(q, k, v, bounds, None, False, tensors["packed_key_mask"])
    assert calls == [(bounds, [0, 2, 5, 6], 5, 3)]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bad_attention_masks(tiny_bert):
    llm = LLM(str(tiny_bert))
    ids = [2, 40, 3]
    with pytest.raises(ValueError, match=r"prompts\[0\]\['attention_mask'\] has 2 entries for 3 tokens"):
        llm.encode({"prompt_token_ids": ids, "attention_mask": [1, 1]}, pooling_task="token_embed")
    with pytest.raises(ValueError, match="attends to no position"):
        llm.encode({"prompt_token_ids": ids, "attention_mask": [0, 0, 0]}, pooling_task="token_embed")
    with pytest.raises(TypeError, match="0 / 1"):
        llm.encode({"prompt_token_ids": ids, "attention_mask": [1, 2, 1]}, pooling_task="token_embed")
    with pytest.raises(ValueError, match="only the .*token_embed.* tasks accept"):
        llm.embed({"prompt_token_ids": ids, "attention_mask": [1, 1, 0]})
    # the engine stays usable
    assert len(llm.encode({"prompt_token_ids": ids}, pooling_task="token_embed")[0].outputs.data) == 3
