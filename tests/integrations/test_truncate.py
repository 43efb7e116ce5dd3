"""The ``truncate`` setting of every integration: cut to the model's limit by default (as
HuggingFaceEmbeddings / Sentence Transformers do), vLLM's error with ``truncate=False``."""

from __future__ import annotations

import numpy as np
import pytest

LONG = "the json module parses and writes json documents in python " * 60  # ~600 tokens > 256


@pytest.fixture(scope="module")
def st_long(default_model_dir):
    """Sentence Transformers' vector of LONG (it cuts to max_seq_length = 256)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_dir), device="cpu").encode([LONG])[0]


def _cos(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_field_is_declared_once_for_both_frameworks():
    from vllm_pool.integrations._engines import TRUNCATE_HELP
    from vllm_pool.integrations.langchain import (
        VllmPoolColBERTRetriever,
        VllmPoolEmbeddings,
        VllmPoolReranker,
    )
    from vllm_pool.integrations.llamaindex import VllmPoolColBERTRerank, VllmPoolEmbedding, VllmPoolRerank

    for cls in (VllmPoolEmbeddings, VllmPoolReranker, VllmPoolColBERTRetriever, VllmPoolEmbedding,
                VllmPoolRerank, VllmPoolColBERTRerank):  # fmt: skip
        field = cls.model_fields["truncate"]
        assert field.default is True and field.description == TRUNCATE_HELP, cls.__name__


def test_langchain_embeddings_cut_by_default_and_raise_without(st_long):
    from vllm_pool.integrations.langchain import VllmPoolEmbeddings

    (vec,) = VllmPoolEmbeddings().embed_documents([LONG])
    assert _cos(vec, st_long) >= 0.9999
    with pytest.raises(ValueError, match=r"longer than the maximum model length of 256.*texts\[1\]"):
        VllmPoolEmbeddings(truncate=False).embed_documents(["short", LONG])
    (cut,) = VllmPoolEmbeddings(truncate=False, truncate_prompt_tokens=-1).embed_documents([LONG])
    assert cut == pytest.approx(vec, abs=1e-6)


def test_llamaindex_embedding_and_rerankers(st_long):
    from llama_index.core.schema import NodeWithScore, TextNode
    from vllm_pool.integrations.langchain import VllmPoolReranker
    from vllm_pool.integrations.llamaindex import VllmPoolEmbedding, VllmPoolRerank

    vec = VllmPoolEmbedding().get_text_embedding(LONG)
    assert _cos(vec, st_long) >= 0.9999
    with pytest.raises(ValueError, match="longer than the maximum model length of 256"):
        VllmPoolEmbedding(truncate=False).get_text_embedding(LONG)
    assert len(VllmPoolReranker(top_n=2).rerank(["short text", LONG], "json")) == 2
    with pytest.raises(ValueError, match="longer than the maximum model length of 256"):
        VllmPoolReranker(truncate=False).rerank(["short text", LONG], "json")
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in ("short text", LONG)]
    assert len(VllmPoolRerank(top_n=2).postprocess_nodes(nodes, query_str="json")) == 2
    with pytest.raises(ValueError, match="longer than the maximum model length of 256"):
        VllmPoolRerank(truncate=False).postprocess_nodes(nodes, query_str="json")


def test_colbert_classes_cut_to_doc_maxlen_unless_truncate_false():
    from vllm_pool.integrations.langchain import VllmPoolColBERTReranker, VllmPoolColBERTRetriever

    docs = ["short text about json", LONG]
    retriever = VllmPoolColBERTRetriever.from_texts(docs, k=1)  # cut to doc_maxlen, with a warning
    assert len(retriever.invoke("json")) == 1
    with pytest.raises(ValueError, match=r"documents\[1\] has \d+ tokens, more than doc_maxlen=180"):
        VllmPoolColBERTRetriever.from_texts(docs, k=1, truncate=False)
    whole = VllmPoolColBERTRetriever.from_texts(docs, k=1, truncate=False, split_long_documents=True)
    assert len(whole.invoke("json")) == 1
    with pytest.raises(ValueError, match="more than doc_maxlen"):
        VllmPoolColBERTReranker(truncate=False).rerank(docs, "json")
    assert len(VllmPoolColBERTReranker(top_n=2).rerank(docs, "json")) == 2


def test_ray_predictor_and_text_embedder(st_long, default_llm):
    pa = pytest.importorskip("pyarrow")
    from vllm_pool.integrations.ray import PoolingPredictor
    from vllm_pool.retrievers import EngineTextEmbedder

    out = PoolingPredictor(task="embed")(pa.table({"text": ["short", LONG]}))
    vecs = out["embedding"].to_pylist()
    assert _cos(vecs[1], st_long) >= 0.9999
    with pytest.raises(ValueError, match="longer than the maximum model length of 256"):
        PoolingPredictor(task="embed", truncate=False)(pa.table({"text": ["short", LONG]}))
    assert _cos(EngineTextEmbedder(default_llm).embed_texts([LONG])[0], st_long) >= 0.9999
    with pytest.raises(ValueError, match="longer than the maximum model length of 256"):
        EngineTextEmbedder(default_llm, truncate=False).embed_texts([LONG])
