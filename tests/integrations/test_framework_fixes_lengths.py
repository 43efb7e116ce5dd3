"""``max_length`` / ``max_seq_length`` (and the fields they set) over the model's limit are
capped at it with one logged warning, as Sentence Transformers and ``HuggingFaceEmbedding``
cut to the model's limit, instead of every call failing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from vllm_pool.integrations import _hf_names  # noqa: E402

LONG = "the json module parses and writes json documents in python " * 60  # ~600 tokens > 256
LIMIT = 256  # all-MiniLM-L6-v2's max_model_len


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(_hf_names, "_capped", set(), raising=False)


def _cos(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _cap_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "over the token limit" in r.getMessage()]


def test_embeddings_cap_max_length_like_sentence_transformers(st_model, caplog) -> None:
    from vllm_pool.integrations.langchain import VllmPoolEmbeddings
    from vllm_pool.integrations.llamaindex import VllmPoolEmbedding

    reference = st_model.encode([LONG, "short text"])  # Sentence Transformers cuts to 256
    caplog.set_level(logging.WARNING, logger="vllm_pool.integrations._hf_names")
    for make in (
        lambda: VllmPoolEmbeddings(max_length=512),
        lambda: VllmPoolEmbeddings(model_kwargs={"max_length": 512}),
        lambda: VllmPoolEmbeddings(max_seq_length=512),
        lambda: VllmPoolEmbeddings(truncate_prompt_tokens=512, truncate=False),
    ):
        emb = make()
        assert emb.truncate_prompt_tokens == LIMIT
        vectors = emb.embed_documents([LONG, "short text"])
        assert [_cos(v, r) for v, r in zip(vectors, reference)] == pytest.approx([1.0, 1.0], abs=1e-4)
        assert _cos(emb.embed_query(LONG), reference[0]) == pytest.approx(1.0, abs=1e-4)
    li = VllmPoolEmbedding(max_length=512)
    assert li.truncate_prompt_tokens == LIMIT
    assert _cos(li.get_text_embedding(LONG), reference[0]) == pytest.approx(1.0, abs=1e-4)
    warnings = _cap_warnings(caplog)
    assert len(warnings) == 2  # one per class, model and value
    assert (
        "VllmPoolEmbeddings: truncate_prompt_tokens=512" in warnings[0] and "max_model_len=256" in warnings[0]
    )
    assert VllmPoolEmbeddings(max_length=100).truncate_prompt_tokens == 100  # within the limit: kept
    assert VllmPoolEmbeddings(truncate_prompt_tokens=-1).truncate_prompt_tokens == -1


@pytest.mark.filterwarnings("ignore:.*bi-encoder")
def test_rerankers_cap_max_length(caplog) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode
    from vllm_pool.integrations.langchain import VllmPoolReranker
    from vllm_pool.integrations.llamaindex import VllmPoolRerank

    caplog.set_level(logging.WARNING, logger="vllm_pool.integrations._hf_names")
    capped = VllmPoolReranker(max_length=512, top_n=None)
    assert capped.truncate_prompt_tokens == LIMIT
    got, default = (r.rerank([LONG, "json"], "json") for r in (capped, VllmPoolReranker(top_n=None)))
    assert [i for i, _ in got] == [i for i, _ in default]
    assert [s for _, s in got] == pytest.approx([s for _, s in default], abs=1e-5)
    li = VllmPoolRerank(cross_encoder_kwargs={"max_length": 512}, top_n=None)
    assert li.truncate_prompt_tokens == LIMIT
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in (LONG, "json")]
    assert len(li.postprocess_nodes(nodes, query_str="json")) == 2
    assert len(_cap_warnings(caplog)) == 2


def test_colbert_classes_cap_doc_and_query_lengths(caplog) -> None:
    from vllm_pool.integrations.langchain import VllmPoolColBERTReranker, VllmPoolColBERTRetriever
    from vllm_pool.integrations.llamaindex import VllmPoolColBERTRerank
    from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever as LIColBERTRetriever

    caplog.set_level(logging.WARNING, logger="vllm_pool.integrations._hf_names")
    retriever = VllmPoolColBERTRetriever.from_texts(["short text about json", LONG], k=2, max_length=512)
    assert retriever.doc_maxlen == LIMIT and retriever.colbert_config.doc_maxlen == LIMIT
    assert len(retriever.invoke("json")) == 2
    assert VllmPoolColBERTReranker(document_length=999).colbert_config.doc_maxlen == LIMIT
    assert VllmPoolColBERTRerank(max_length=512).colbert_config.doc_maxlen == LIMIT
    li = LIColBERTRetriever(max_seq_length=400, query_length=300)
    assert (li.colbert_config.doc_maxlen, li.colbert_config.query_maxlen) == (LIMIT, LIMIT)
    assert len(_cap_warnings(caplog)) == 5
