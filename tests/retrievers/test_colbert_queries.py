"""ColBERT query length: a cut query is logged (once per call, as documents are), and without
query expansion or a checkpoint's own ``query_maxlen`` (BGE-M3, a plain embedding model) a
query may use the model's whole length, as FlagEmbedding encodes BGE-M3 queries."""

from __future__ import annotations

import logging
from typing import Any

import colbert_checkpoints as ck
import pytest
from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder

from vllm_pool import LLM

from .conftest import FakeTokenEncoder

LONG_QUERY = " ".join(f"w{i}" for i in range(50))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "queries" in r.msg]


def test_cut_queries_are_logged_once_per_call(fake_encoder, caplog):
    enc = ColBERTEncoder(fake_encoder, ColBERTConfig(query_maxlen=8))
    caplog.set_level(logging.WARNING, logger="vllm_pool.retrievers.colbert")
    vectors = enc.encode_queries([LONG_QUERY, "short one", LONG_QUERY])
    assert [len(v) for v in vectors] == [8, 4, 8]
    assert _warnings(caplog) == ["2 of 3 queries are longer than query_maxlen=8 tokens and were cut"]
    caplog.clear()
    enc.encode_queries(["short one"])
    assert _warnings(caplog) == []


class _Limited(FakeTokenEncoder):
    """A fake encoder with a token limit and, optionally, a checkpoint's settings."""

    def __init__(self, settings: dict[str, Any] | None, max_length: int | None = 64) -> None:
        super().__init__()
        self.colbert_settings = settings
        self.max_length = max_length


BGE_M3 = {"mask_augment": False, "skip_punctuation": False}  # what the engine reads for BGE-M3
HF_COLBERT = {"query_maxlen": 16, "doc_maxlen": 40, "query_marker": "[unused0]", "mask_augment": True}


@pytest.mark.parametrize(
    ("settings", "overrides", "limit", "want"),
    [
        (BGE_M3, {}, 64, 64),  # no expansion: the model's length
        (None, {}, 64, 64),  # a plain model
        (None, {"mask_augment": True}, 64, 32),  # expansion pads to ColBERT's 32
        (BGE_M3, {"query_maxlen": 20}, 64, 20),
        (HF_COLBERT, {}, 64, 16),  # the checkpoint's own length
        (HF_COLBERT, {"mask_augment": False}, 64, 16),
        ({"query_maxlen": 32, "mask_augment": False}, {}, 64, 32),  # PyLate, no expansion
        (BGE_M3, {}, None, 32),  # no known limit
    ],
)
def test_default_query_length(settings, overrides, limit, want):
    cfg = ColBERTEncoder.default_config(_Limited(settings, limit), **overrides)
    assert cfg.query_maxlen == want


def test_bge_m3_queries_are_not_cut_at_32_tokens(tiny_dir, caplog):
    folder = ck.save_bge_m3(tiny_dir / "bge_m3_queries")
    llm = LLM(str(folder), hf_overrides={"architectures": ["BgeM3EmbeddingModel"]})
    enc = ColBERTEncoder.from_llm(llm)
    assert enc.config.query_maxlen == llm.model_config.max_model_len
    queries = [" ".join(["hello world"] * 30), "hello"]  # 62 tokens with the special ones
    assert len(llm.get_tokenizer()(queries[0])["input_ids"]) > 32
    caplog.set_level(logging.WARNING, logger="vllm_pool.retrievers.colbert")
    got = enc.encode_queries(queries)
    want = ck.bge_m3_vectors(folder, queries)  # FlagEmbedding: the whole query
    assert [len(v) for v in got] == [len(w) for w in want]
    assert ck.min_cosine(got, want) >= 0.9999
    assert _warnings(caplog) == []
