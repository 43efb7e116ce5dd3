"""Packed variable-length batches (the default on the CPU and, in half precision, on CUDA).

Packed outputs are compared with the padded path on the same weights, for an encoder, a
RoBERTa-style encoder (positions start after the padding id), a causal decoder with
grouped-query attention, and a cross-encoder with token type ids.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from attention_masks import block_diagonal_mask
from fakes import OOMAbove
from tiny_models import TEXTS
from vllm_pool.engine import packing

from vllm_pool import LLM


def _embed(llm: LLM) -> np.ndarray:
    outs = llm.embed(TEXTS, use_tqdm=False, truncate_prompt_tokens=-1)  # TEXTS[5] is over the limit
    return np.array([o.outputs.embedding for o in outs])


def _tokens(llm: LLM) -> list[np.ndarray]:
    outs = llm.encode(TEXTS, pooling_task="token_embed", use_tqdm=False, truncate_prompt_tokens=-1)
    return [np.asarray(o.outputs.data) for o in outs]


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_xlmr", "tiny_qwen2"])
def test_packed_matches_padded(name, request):
    folder = request.getfixturevalue(name)
    padded = LLM(str(folder), packed=False, max_num_batched_tokens=96)
    packed = LLM(str(folder), packed=True, max_num_batched_tokens=96)
    assert packed.runner.packed and not padded.runner.packed
    np.testing.assert_allclose(_embed(packed), _embed(padded), rtol=1e-4, atol=1e-5)
    for a, b in zip(_tokens(packed), _tokens(padded)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_packed_cross_encoder_pairs_keep_token_types(tiny_dir):
    folder = tiny_models.bert(tiny_dir / "bert_ce_packed", cls="BertForSequenceClassification", num_labels=1)
    queries = ["what is a list", "sorting in python"]
    docs = ["a list is a mutable sequence", "sorted returns a new list", "dicts map keys"]
    ref = [o.outputs.score for o in LLM(str(folder), packed=False).score(queries[0], docs, use_tqdm=False)]
    llm = LLM(str(folder), packed=True)
    got = [o.outputs.score for o in llm.score(queries[0], docs, use_tqdm=False)]
    assert llm.runner.packed
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_packed_decoder_classifier_and_reward(tiny_dir):
    """A causal score head over a batch: LAST-token classify and per-token reward."""
    folder = tiny_models.qwen2(
        tiny_dir / "qwen_seq_packed", cls="Qwen2ForSequenceClassification", num_labels=2
    )
    padded, packed = LLM(str(folder), packed=False), LLM(str(folder), packed=True)
    assert packed.runner.packed
    kw = {"use_tqdm": False, "truncate_prompt_tokens": -1}  # TEXTS[5] is over the limit
    for a, b in zip(packed.classify(TEXTS, **kw), padded.classify(TEXTS, **kw)):
        np.testing.assert_allclose(a.outputs.probs, b.outputs.probs, rtol=1e-4, atol=1e-6)
    for a, b in zip(packed.reward(TEXTS, **kw), padded.reward(TEXTS, **kw)):
        np.testing.assert_allclose(
            np.asarray(a.outputs.data), np.asarray(b.outputs.data), rtol=1e-4, atol=1e-6
        )


def test_packing_is_the_default_on_the_cpu_and_where_flash_varlen_runs(tiny_bert, monkeypatch):
    cpu = torch.device("cpu")
    assert packing.default_on(torch.float32, cpu) and packing.default_on(torch.bfloat16, cpu)
    assert not packing.default_on(torch.float16, cpu)
    assert LLM(str(tiny_bert)).runner.packed is True  # CPU fp32
    assert LLM(str(tiny_bert), dtype="bfloat16").runner.packed is True
    assert LLM(str(tiny_bert), dtype="float16").runner.packed is False
    assert LLM(str(tiny_bert), compile=True).runner.packed is False  # compiled graphs stay padded
    monkeypatch.setattr(packing, "default_on", lambda dtype, device: False)  # as on CUDA in fp32
    assert LLM(str(tiny_bert)).runner.packed is False


def test_default_on_an_architecture_that_cannot_pack_is_silent(tiny_bert, monkeypatch, caplog):
    """Nothing asked for, nothing to warn about: padded, logged at debug level only."""
    monkeypatch.setattr(packing, "supports_packing", lambda model, max_len=None: False)
    with caplog.at_level(logging.DEBUG, logger="vllm_pool.engine.runner"):
        llm = LLM(str(tiny_bert))
    assert llm.runner.packed is False
    records = [r for r in caplog.records if "does not support packed batches" in r.getMessage()]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    np.testing.assert_allclose(_embed(llm), _embed(LLM(str(tiny_bert), packed=True)), rtol=1e-4, atol=1e-5)


def test_probe_turns_packing_off_when_outputs_disagree(tiny_bert, monkeypatch, caplog):
    monkeypatch.setattr(packing, "position_offset", lambda model: 7)  # wrong positions
    with caplog.at_level(logging.WARNING, logger="vllm_pool.engine.runner"):
        llm = LLM(str(tiny_bert), packed=True)
    assert llm.runner.packed is False
    assert "disagree with padded" in caplog.text
    assert llm.runner.model.config._attn_implementation == "sdpa"  # restored
    monkeypatch.undo()
    np.testing.assert_allclose(_embed(llm), _embed(LLM(str(tiny_bert), packed=False)), rtol=1e-5, atol=1e-6)


def test_architecture_without_attention_interface_runs_padded(tiny_bert, monkeypatch, caplog):
    monkeypatch.setattr(packing, "supports_packing", lambda model, max_len=None: False)
    with caplog.at_level(logging.WARNING, logger="vllm_pool.engine.runner"):
        llm = LLM(str(tiny_bert), packed=True)
    assert llm.runner.packed is False
    assert "does not support packed batches" in caplog.text


def _block_diagonal_reference(q, k, v, bounds, causal):
    """Dense SDPA over the whole row with a block-diagonal (and causal) boolean mask."""
    mask = block_diagonal_mask(q.shape[-2], bounds, causal)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [[4, 4, 4], [3, 5, 3, 3, 2, 5, 1]])  # one run / scattered lengths
def test_varlen_attention_is_block_diagonal_attention(causal, lengths):
    torch.manual_seed(0)
    n, heads, kv_heads, dim = sum(lengths), 4, 2, 8
    q = torch.randn(1, heads, n, dim)
    k, v = torch.randn(1, kv_heads, n, dim), torch.randn(1, kv_heads, n, dim)
    bounds = np.cumsum([0, *lengths]).tolist()
    module = torch.nn.Module()
    module.is_causal = causal
    out, _ = packing.varlen_attention(
        module, q, k, v, None, cu_seq_lens_q=torch.tensor(bounds), max_length_q=max(lengths)
    )
    ref = _block_diagonal_reference(q, k, v, bounds, causal)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def _reference_kernel(seen, scale_default=False):
    """Varlen semantics in plain torch, recording how it was called."""

    def attend(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, gqa):
        seen.update(dtype=cu_q.dtype, max_q=max_q, causal=causal, gqa=gqa, shape=tuple(q.shape))
        qh, kh, vh = (t.transpose(0, 1)[None] for t in (q, k, v))
        if scale is not None:
            qh = qh * (scale / q.shape[-1] ** -0.5)
        return _block_diagonal_reference(qh, kh, vh, cu_q.tolist(), causal)[0]

    def v213(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        return attend(q, k, v, cu_q, cu_k, max_q, max_k, window_size[1] == 0, scale, enable_gqa)

    def v211(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1)):
        return attend(q, k, v, cu_q, cu_k, max_q, max_k, window_size[1] == 0, scale, None)

    def v210(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, return_aux=None):
        return attend(q, k, v, cu_q, cu_k, max_q, max_k, is_causal, None, None)

    return {"2.13": v213, "2.11": v211, "2.10": v210}


@pytest.mark.parametrize("version", ["2.13", "2.11", "2.10"])
def test_flash_kernel_gets_the_varlen_layout(monkeypatch, version):
    """The CUDA branch: [tokens, heads, dim] tensors, int32 bounds, causality, scale and GQA,
    for each varlen_attn signature torch has shipped."""
    seen = {}
    kernel = _reference_kernel(seen)[version]
    monkeypatch.setattr(packing, "flash_kernel", lambda query: kernel)
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 9, 8), torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    module = torch.nn.Module()
    module.is_causal = True
    scaling = 0.2  # not the default 1/sqrt(8): the 2.10 signature gets a rescaled query
    out, _ = packing.varlen_attention(
        module, q, k, v, None, scaling=scaling, cu_seq_lens_q=torch.tensor([0, 4, 9]), max_length_q=5
    )
    assert seen["dtype"] == torch.int32 and seen["max_q"] == 5 and seen["causal"] is True
    assert seen["shape"] == (9, 4, 8)
    assert seen["gqa"] is (True if version == "2.13" else None)
    ref = _block_diagonal_reference(q * (scaling / 8**-0.5), k, v, [0, 4, 9], True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_failing_flash_kernel_falls_back_to_padded(tiny_bert, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("FlashAttention only supports Ampere GPUs or newer")

    monkeypatch.setattr(packing, "flash_kernel", lambda query: broken)
    with caplog.at_level(logging.WARNING, logger="vllm_pool.engine.runner"):
        llm = LLM(str(tiny_bert), packed=True)
    assert llm.runner.packed is False and "Packed batches failed" in caplog.text
    monkeypatch.undo()
    np.testing.assert_allclose(_embed(llm), _embed(LLM(str(tiny_bert), packed=False)), rtol=1e-5, atol=1e-6)


def test_flash_kernel_only_for_cuda_half_precision():
    assert packing.flash_kernel(torch.zeros(2, 2)) is None
    assert packing.flash_kernel(torch.zeros(2, 2, dtype=torch.bfloat16)) is None  # CPU


def test_position_offset_follows_the_embeddings(tiny_bert, tiny_xlmr):
    from transformers import AutoModel

    assert packing.position_offset(AutoModel.from_pretrained(tiny_bert)) == 0
    xlmr = AutoModel.from_pretrained(tiny_xlmr)
    assert packing.position_offset(xlmr) == xlmr.config.pad_token_id + 1


def test_packed_oom_splits_and_gives_the_same_outputs(tiny_bert):
    llm = LLM(str(tiny_bert), packed=True)
    ref = _embed(llm)
    lengths = [len(ids) for ids in llm.get_tokenizer()(TEXTS)["input_ids"]]
    limit = max(lengths)  # every prompt fits alone, the whole batch does not
    fake = OOMAbove(llm.runner.model, limit=limit, per="tokens")
    llm.runner.model = fake
    np.testing.assert_allclose(_embed(llm), ref, rtol=1e-5, atol=1e-6)
    assert max(fake.calls) > limit  # the first try was too big
    assert sum(r for r in fake.calls if r <= limit) == sum(lengths)  # the halves covered every token once
