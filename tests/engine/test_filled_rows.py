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


def test_fillers_stay_within_the_budget_and_the_position_limit():
    for tokens in range(1, 20_000, 37):
        for budget in (None, tokens, tokens + 5, 2048, 8192, 32_768):
            for longest in (32, 128, 512):
                pieces = packing.fillers(tokens, budget, longest)
                target = packing.row_length(tokens)
                if budget is not None:
                    target = max(tokens, min(target, budget))
                assert tokens + sum(pieces) == target, (tokens, budget, longest)
                assert all(0 < p <= longest for p in pieces)
    assert packing.fillers(97, 100, 512) == [3]  # capped at a budget that is not a row length
    assert packing.fillers(6000, None, 128) == [128, 16]  # 6,144: split at the position limit
    assert packing.fillers(2048, 2048, 512) == []


LONG = [" ".join(f"word{i + j}" for j in range(70 + (i * 7) % 50)) for i in range(160)]


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_xlmr"])
def test_large_budgets_fill_rows_within_the_model_positions(name, request):
    # a row of ~6,000 tokens is filled by up to 255 tokens, more than the 128 positions
    llm = LLM(str(request.getfixturevalue(name)), max_num_batched_tokens=8192)
    rows, stage = [], llm.runner.stage
    llm.runner.stage = lambda batch: rows.append(stage(batch)) or rows[-1]
    plain = np.array([o.outputs.embedding for o in llm.embed(LONG, use_tqdm=False)])
    llm.runner.fill_rows, rows[:] = True, []
    filled = np.array([o.outputs.embedding for o in llm.embed(LONG, use_tqdm=False)])
    np.testing.assert_allclose(filled, plain, rtol=1e-5, atol=1e-6)
    limit = llm.runner.cfg.max_model_len
    assert any(s.extra["packed_bounds"][-1] > s.cu_seqlens[-1].item() for s in rows), "no row was filled"
    for staged in rows:
        bounds, n = staged.extra["packed_bounds"], staged.cu_seqlens[-1].item()
        assert bounds[-1] == packing.row_length(n) <= 8192
        assert max(b - a for a, b in zip(bounds, bounds[1:])) <= limit
    # 4,100 tokens: filled up to 4,352 by 252 tokens, in two segments within the positions
    ids = [[5 + i % 50] * 100 for i in range(41)]
    batch = Batch([Request(index=i, prompt_token_ids=t, params=None) for i, t in enumerate(ids)])
    staged = llm.runner.stage(batch)
    bounds = staged.extra["packed_bounds"]
    assert bounds[-3:] == [4100, 4100 + limit, 4352] and staged.inputs["position_ids"].max() < limit + 2
    assert llm.runner.forward(staged).data.shape[0] == 4100


def test_a_filled_row_stays_within_a_budget_that_is_not_a_row_length(tiny_bert):
    llm = LLM(str(tiny_bert), max_num_batched_tokens=100)
    llm.runner.fill_rows = True
    rows, stage = [], llm.runner.stage
    llm.runner.stage = lambda batch: rows.append(stage(batch)) or rows[-1]
    plain = LLM(str(tiny_bert), max_num_batched_tokens=100).embed(TEXTS, **KW)
    filled = llm.embed(TEXTS, **KW)
    vectors = [[o.outputs.embedding for o in outs] for outs in (filled, plain)]
    np.testing.assert_allclose(*vectors, rtol=1e-5, atol=1e-6)
    assert max(s.inputs["input_ids"].shape[1] for s in rows) <= 100
    assert any(s.inputs["input_ids"].shape[1] > s.cu_seqlens[-1].item() for s in rows)  # some were filled
