"""Packed rows filled up to a few fixed lengths (the CPU in half precision).

oneDNN builds its GEMM kernels per row count in bf16 / fp16, so the runner fills a packed
row with a segment of its own up to :func:`packing.row_length`. The filler must change no
output: filled and unfilled rows are compared on the same weights for an encoder, a
RoBERTa-style encoder, a causal decoder, text pairs and prompts with an attention mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import TEXTS
from vllm_pool.engine import packing
from vllm_pool.engine.types import Batch, Request

from vllm_pool import LLM

KW = {"use_tqdm": False, "truncate_prompt_tokens": -1}  # TEXTS[5] is over the limit


def test_row_length_is_one_of_few_lengths_and_wastes_little():
    lengths = {t: packing.row_length(t) for t in range(1, 5000)}
    for t, n in lengths.items():
        assert n >= t and n % 16 == 0
        assert n - t <= max(15, t / 16), (t, n)
        assert packing.row_length(n) == n  # a full row is not filled further
    assert len({n for t, n in lengths.items() if t <= 2048}) == 64
    assert packing.row_length(1000) == 1024 and packing.row_length(1025) == 1088


def test_rows_are_filled_on_the_cpu_in_half_precision_only(tiny_bert):
    cpu = torch.device("cpu")
    assert packing.fills_rows(torch.bfloat16, cpu) and packing.fills_rows(torch.float16, cpu)
    assert not packing.fills_rows(torch.float32, cpu)
    assert not packing.fills_rows(torch.bfloat16, torch.device("cuda"))
    assert LLM(str(tiny_bert), dtype="bfloat16").runner.fill_rows is True
    assert LLM(str(tiny_bert)).runner.fill_rows is False  # fp32
    assert LLM(str(tiny_bert), dtype="bfloat16", packed=False).runner.fill_rows is False  # padded


def test_a_filled_row_has_the_row_length_and_its_prompts_first(tiny_bert):
    llm = LLM(str(tiny_bert))
    llm.runner.fill_rows = True
    ids = [[2, 40, 41, 3], [2, 50, 51, 52, 53, 3], [2, 60, 3]]
    batch = Batch([Request(index=i, prompt_token_ids=t, params=None) for i, t in enumerate(ids)])
    staged = llm.runner.stage(batch)
    row = staged.inputs["input_ids"][0]
    assert row.shape[0] == packing.row_length(13) == 16
    assert row[:13].tolist() == [x for t in ids for x in t]
    assert staged.extra["packed_bounds"] == [0, 4, 10, 13, 16]  # the filler is a segment of its own
    assert staged.cu_seqlens.tolist() == [0, 4, 10, 13]  # the prompts' bounds, for pooling
    assert staged.extra["cu_seq_lens_q"].tolist() == [0, 4, 10, 13, 16]
    hidden = llm.runner.forward(staged)
    assert hidden.data.shape[0] == hidden.token_ids.shape[0] == 13


def _embed_and_tokens(llm: LLM, fill: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    llm.runner.fill_rows = fill
    emb = np.array([o.outputs.embedding for o in llm.embed(TEXTS, **KW)])
    tokens = [np.asarray(o.outputs.data) for o in llm.encode(TEXTS, pooling_task="token_embed", **KW)]
    return emb, tokens


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_xlmr", "tiny_qwen2"])
def test_filling_changes_no_output(name, request):
    llm = LLM(str(request.getfixturevalue(name)), max_num_batched_tokens=96)
    assert llm.runner.packed
    emb, tokens = _embed_and_tokens(llm, fill=False)
    filled_emb, filled_tokens = _embed_and_tokens(llm, fill=True)
    np.testing.assert_allclose(filled_emb, emb, rtol=1e-5, atol=1e-6)
    for a, b in zip(filled_tokens, tokens):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_filling_keeps_pairs_and_attention_masks(tiny_dir, tiny_bert):
    folder = tiny_models.bert(tiny_dir / "bert_ce_filled", cls="BertForSequenceClassification", num_labels=1)
    ce = LLM(str(folder))
    docs = ["a list is a mutable sequence", "sorted returns a new list", "dicts map keys"]
    scores = {}
    for fill in (False, True):
        ce.runner.fill_rows = fill
        scores[fill] = [o.outputs.score for o in ce.score("what is a list", docs, use_tqdm=False)]
    np.testing.assert_allclose(scores[True], scores[False], rtol=1e-5, atol=1e-6)

    llm = LLM(str(tiny_bert))
    prompts = [
        {"prompt_token_ids": [2, 40, 41, 42, 3, 4, 4, 4], "attention_mask": [1, 1, 1, 1, 1, 0, 0, 0]},
        {"prompt_token_ids": [2, 60, 61, 62, 63, 64, 3]},
    ]
    vectors = {}
    for fill in (False, True):
        llm.runner.fill_rows = fill
        outs = llm.encode(prompts, pooling_task="token_embed", **KW)
        vectors[fill] = [o.outputs.data.numpy() for o in outs]
    for a, b in zip(vectors[True], vectors[False]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_default_fills_rows_and_agrees_with_unfilled(tiny_bert):
    llm = LLM(str(tiny_bert), dtype="bfloat16")
    filled = np.array([o.outputs.embedding for o in llm.embed(TEXTS, **KW)])
    llm.runner.fill_rows = False
    plain = np.array([o.outputs.embedding for o in llm.embed(TEXTS, **KW)])
    cosine = (filled * plain).sum(1) / np.linalg.norm(filled, axis=1) / np.linalg.norm(plain, axis=1)
    assert cosine.min() > 0.999
