"""Parity with Sentence Transformers on the packaged all-MiniLM-L6-v2 (fp32)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

TEXTS = [
    "Hello, my name is",
    "The capital of France is Paris.",
    "   ",
    "\t\n",
    "Ünïcödé: 日本語のテキスト, Ελληνικά, emoji 🚀 and العربية",
    "A long passage about retrieval. " * 120,  # longer than max_seq_length (256)
    "x",
    "How do I parse a JSON string into a Python object?",
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _embed(llm, texts, **kw) -> np.ndarray:
    kw.setdefault("truncate_prompt_tokens", -1)  # Sentence Transformers cuts to max_seq_length
    return np.array([o.outputs.embedding for o in llm.embed(texts, use_tqdm=False, **kw)])


def test_embed_matches_sentence_transformers(default_llm, st_model):
    ref = st_model.encode(TEXTS, convert_to_numpy=True)
    ours = _embed(default_llm, TEXTS)
    assert ours.shape == ref.shape == (len(TEXTS), 384)
    assert _cos(ours, ref).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_long_input_truncated_to_st_max_seq_length(default_llm, st_model):
    """Over the limit is vLLM's error; ``truncate_prompt_tokens=-1`` cuts to ST's max_seq_length."""
    with pytest.raises(ValueError, match=r"\(length \d+\) is longer than the maximum model length of 256"):
        default_llm.embed(TEXTS[5], use_tqdm=False)
    (out,) = default_llm.embed(TEXTS[5], use_tqdm=False, truncate_prompt_tokens=-1)
    assert len(out.prompt_token_ids) == st_model.max_seq_length == 256
    ref = st_model.encode([TEXTS[5]], convert_to_numpy=True)
    assert _cos(np.array([out.outputs.embedding]), ref).min() >= 0.9999


def test_alone_batch_and_shuffled_batch_agree(default_llm):
    batch = _embed(default_llm, TEXTS)
    alone = np.stack([_embed(default_llm, t)[0] for t in TEXTS])
    order = list(range(len(TEXTS)))
    random.Random(0).shuffle(order)
    shuffled = _embed(default_llm, [TEXTS[i] for i in order])
    unshuffled = np.empty_like(shuffled)
    unshuffled[order] = shuffled
    assert _cos(batch, alone).min() >= 0.99999
    assert _cos(batch, unshuffled).min() >= 0.99999


def test_small_token_budget_gives_same_vectors(default_model_dir):
    from vllm_pool import LLM

    llm = LLM(str(default_model_dir), max_num_batched_tokens=64, max_num_seqs=2)
    ref = _embed(LLM(str(default_model_dir)), TEXTS)
    assert _cos(_embed(llm, TEXTS), ref).min() >= 0.99999


def test_token_embed_matches_st_token_embeddings(default_llm, st_model):
    texts = TEXTS[:3] + TEXTS[4:6]
    refs = st_model.encode(texts, output_value="token_embeddings", convert_to_tensor=False)
    kw = {"use_tqdm": False, "truncate_prompt_tokens": -1}  # ST cuts TEXTS[5]
    outs = default_llm.encode(texts, pooling_task="token_embed", **kw)
    for ref, out in zip(refs, outs):
        ref = torch.as_tensor(ref)
        assert out.outputs.data.shape == ref.shape
        ref_n = torch.nn.functional.normalize(ref, dim=-1)
        cos = (out.outputs.data * ref_n).sum(-1)
        assert float(cos.min()) >= 0.99999


def test_token_embed_without_normalize_is_raw(default_llm, st_model):
    from vllm_pool import PoolingParams

    (ref,) = st_model.encode(["hello world"], output_value="token_embeddings", convert_to_tensor=False)
    (out,) = default_llm.encode(
        "hello world", PoolingParams(normalize=False), pooling_task="token_embed", use_tqdm=False
    )
    torch.testing.assert_close(out.outputs.data, torch.as_tensor(ref), rtol=1e-4, atol=1e-5)


def test_embed_without_normalize_matches_st_unnormalized(default_llm, st_model):
    from vllm_pool import PoolingParams

    ref = st_model.encode(TEXTS[:3], normalize_embeddings=False, convert_to_numpy=True)
    ours = _embed(default_llm, TEXTS[:3], pooling_params=PoolingParams(normalize=False))
    # the folder ends with Normalize, so ST's output is normalized; ours is the raw mean
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)
    assert _cos(ours, ref).min() >= 0.99999


def test_truncate_prompt_tokens(default_llm):
    (out,) = default_llm.embed(TEXTS[5], use_tqdm=False, truncate_prompt_tokens=10)
    assert len(out.prompt_token_ids) == 10
    with pytest.raises(ValueError, match=r"truncate_prompt_tokens value \(257\) is greater than"):
        default_llm.embed("hi", use_tqdm=False, truncate_prompt_tokens=257)


def test_encode_embed_equals_embed(default_llm):
    a = _embed(default_llm, TEXTS[:2])
    b = np.stack(
        [o.outputs.data.numpy() for o in default_llm.encode(TEXTS[:2], pooling_task="embed", use_tqdm=False)]
    )
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_chunked_tokenization_pipeline_gives_the_same_outputs(default_model_dir):
    """Inputs larger than ``tokenize_chunk`` are tokenized ahead on a thread, chunk by chunk."""
    from vllm_pool import LLM

    llm = LLM(str(default_model_dir))
    texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 3)]
    whole = llm.embed(texts, use_tqdm=False, truncate_prompt_tokens=-1)
    llm.tokenize_chunk = 5
    outs = llm.embed(texts, use_tqdm=False, truncate_prompt_tokens=-1)
    assert [o.prompt_token_ids for o in outs] == [o.prompt_token_ids for o in whole]
    ref = np.array([o.outputs.embedding for o in whole])
    np.testing.assert_allclose(np.array([o.outputs.embedding for o in outs]), ref, rtol=1e-5, atol=1e-6)
    # a bad token-id prompt in a later chunk fails before any chunk runs, naming its position
    with pytest.raises(ValueError, match=r"prompts\[12\]\['prompt_token_ids'\] has ids outside"):
        llm.embed(texts[:12] + [{"prompt_token_ids": [10**6]}], use_tqdm=False)
    # an over-long prompt in a later chunk fails with vLLM's error, naming its position
    with pytest.raises(ValueError, match=r"longer than the maximum model length of 256.*prompts\[5\]"):
        llm.embed(texts, use_tqdm=False)
    tokens = llm.encode(texts, pooling_task="token_embed", use_tqdm=False, truncate_prompt_tokens=-1)
    assert [t.outputs.data.shape[0] for t in tokens] == [len(o.prompt_token_ids) for o in outs]


@pytest.mark.parametrize("packed", [None, False])
def test_bfloat16_cpu_mode_stays_within_the_issue_bound(default_model_dir, st_model, packed):
    """bf16 on the CPU (prepacked bf16 linears; packed by default, padded batches with eager
    attention): cosine >= 0.999 vs ST fp32 on a batch of mixed lengths."""
    from vllm_pool import LLM

    llm = LLM(str(default_model_dir), dtype="bfloat16", packed=packed)
    assert llm.runner.packed is (packed is None)
    want = "eager" if packed is False else "vllm_pool_varlen"
    assert llm.runner.model.config._attn_implementation == want
    ref = st_model.encode(TEXTS, convert_to_numpy=True)
    assert _cos(_embed(llm, TEXTS), ref).min() >= 0.999


def test_attention_choice_per_device_and_dtype():
    from types import SimpleNamespace

    from vllm_pool.engine.loader import attention_implementation as _attention

    def cfg(device: str, dtype: torch.dtype) -> SimpleNamespace:
        return SimpleNamespace(device=torch.device(device), dtype=dtype)

    assert _attention(cfg("cpu", torch.float32)) == "sdpa"  # the CPU flash kernel wins in fp32
    assert _attention(cfg("cpu", torch.bfloat16)) == "eager"
    assert _attention(cfg("cuda", torch.bfloat16)) == "sdpa"
