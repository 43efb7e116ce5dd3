"""LLM.score with one PoolingParams per pair: accepted by the bi-encoder (cosine) path as by the
cross-encoder path; a wrong count is an error that speaks of pairs."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch

from vllm_pool import LLM, PoolingParams

QUERY = "How do I parse a JSON document in Python?"
DOCS = ["json.loads parses a JSON document", "Paris is the capital of France.", "json module docs"]


def _st_cosine(st_model, a: list[str], b: list[str], max_seq_length: int | None = None) -> np.ndarray:
    old = st_model.max_seq_length
    if max_seq_length is not None:
        st_model.max_seq_length = max_seq_length
    try:
        ea = st_model.encode(a, convert_to_tensor=True)
        eb = st_model.encode(b, convert_to_tensor=True)
    finally:
        st_model.max_seq_length = old
    return torch.nn.functional.cosine_similarity(ea, eb).cpu().numpy()


def test_bi_encoder_one_params_per_pair(default_llm, st_model) -> None:
    outs = default_llm.score(QUERY, DOCS, pooling_params=[PoolingParams()] * 3, use_tqdm=False)
    np.testing.assert_allclose(
        [o.outputs.score for o in outs], _st_cosine(st_model, [QUERY] * 3, DOCS), atol=1e-5
    )


def test_bi_encoder_pairs_with_different_params(default_llm, st_model) -> None:
    """The query of pair 0 is cut to 6 tokens, the same query in the other pairs is not."""
    params = [PoolingParams(truncate_prompt_tokens=6), PoolingParams(), PoolingParams()]
    outs = default_llm.score(QUERY, DOCS, pooling_params=params, use_tqdm=False)
    cut = _st_cosine(st_model, [QUERY], DOCS[:1], max_seq_length=6)
    whole = _st_cosine(st_model, [QUERY] * 2, DOCS[1:])
    np.testing.assert_allclose([o.outputs.score for o in outs], np.concatenate([cut, whole]), atol=1e-5)
    assert len(outs[0].prompt_token_ids) < len(outs[1].prompt_token_ids)


def test_wrong_count_names_pairs(default_llm, tiny_dir) -> None:
    with pytest.raises(ValueError, match="pooling_params has 2 entries but there are 3 pairs"):
        default_llm.score(QUERY, DOCS, pooling_params=[PoolingParams()] * 2, use_tqdm=False)
    folder = tiny_dir / "bert_ce_score_params"
    if not (folder / "config.json").exists():
        tiny_models.bert(folder, cls="BertForSequenceClassification", num_labels=1)
    cross = LLM(str(folder))
    with pytest.raises(ValueError, match="pooling_params has 2 entries but there are 3 pairs"):
        cross.score(QUERY, DOCS, pooling_params=[PoolingParams()] * 2, use_tqdm=False)
    assert len(cross.score(QUERY, DOCS, pooling_params=[PoolingParams()] * 3, use_tqdm=False)) == 3


def test_bi_encoder_pairs_with_different_dimensions(default_model_dir, st_model) -> None:
    """Per-pair Matryoshka sizes: each pair's cosine at its own size (the two sides share it)."""
    llm = LLM(str(default_model_dir), hf_overrides={"is_matryoshka": True})
    params = [PoolingParams(dimensions=32), PoolingParams(), PoolingParams(dimensions=64)]
    outs = llm.score(QUERY, DOCS, pooling_params=params, use_tqdm=False)
    full_q, full_d = (
        st_model.encode([QUERY], convert_to_tensor=True),
        st_model.encode(DOCS, convert_to_tensor=True),
    )
    want = [
        torch.nn.functional.cosine_similarity(full_q[0, :n], full_d[i, :n], dim=0).item()
        for i, n in enumerate([32, 384, 64])
    ]
    np.testing.assert_allclose([o.outputs.score for o in outs], want, atol=1e-5)
