"""Sentence Transformers ``similarity_fn_name`` and ``include_prompt=False`` in the
integrations' own scores, against Sentence Transformers on the same tiny folders.

``LLM.score`` keeps vLLM's cosine whatever the folder says.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models

pytest.importorskip("langchain_core")

DOCS = [
    "paris is the capital of france",
    "the cat sat on the mat",
    "python functions and classes",
    "a river runs through the city",
    "vector search with embeddings",
    "bread and butter",
]
QUERY = "which city is the capital of france"
PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module", params=["cosine", "dot", "euclidean", "manhattan"])
def st_folder(request, tmp_path_factory):
    base = tiny_models.bert(tmp_path_factory.mktemp("simbase") / "bert")
    return tiny_models.sentence_transformer(
        tmp_path_factory.mktemp("sim") / request.param, base, pooling="mean", dense_out=None,
        normalize=False, include_prompt=False, prompts=PROMPTS, similarity_fn_name=request.param,
    )  # fmt: skip


@pytest.fixture(scope="module")
def st(st_folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(st_folder), device="cpu")


def test_embeddings_use_the_prompts_like_st(st_folder, st):
    from vllm_pool.integrations.langchain import VllmPoolEmbeddings

    emb = VllmPoolEmbeddings(model=str(st_folder))
    assert emb.similarity_fn_name == st.similarity_fn_name
    np.testing.assert_allclose(emb.embed_query(QUERY), st.encode_query(QUERY), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb.embed_documents(DOCS), st.encode_document(DOCS), rtol=1e-4, atol=1e-5)


def _st_scores(st, query_vec, doc_vecs):
    import torch

    return st.similarity(torch.as_tensor(np.atleast_2d(query_vec)), torch.as_tensor(doc_vecs))[0].numpy()


def test_bi_encoder_rerank_scores_with_the_model_similarity(st_folder, st):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from vllm_pool.integrations.langchain import VllmPoolReranker
    from vllm_pool.integrations.llamaindex import VllmPoolRerank

    ref = _st_scores(st, st.encode(QUERY), st.encode(DOCS))
    ranked = VllmPoolReranker(model=str(st_folder), top_n=None).rerank(DOCS, QUERY)
    assert [i for i, _ in ranked] == list(np.argsort(-ref, kind="stable"))
    np.testing.assert_allclose([s for _, s in ranked], np.sort(ref)[::-1], rtol=1e-4, atol=1e-4)

    nodes = [NodeWithScore(node=TextNode(text=t)) for t in DOCS]
    out = VllmPoolRerank(model=str(st_folder), top_n=2).postprocess_nodes(nodes, QueryBundle(QUERY))
    np.testing.assert_allclose([n.score for n in out], np.sort(ref)[::-1][:2], rtol=1e-4, atol=1e-4)


def test_llm_score_keeps_vllm_cosine(st_folder, st):
    from vllm_pool import LLM

    llm = LLM(str(st_folder))
    got = [o.outputs.score for o in llm.score(QUERY, DOCS, use_tqdm=False)]
    q, d = st.encode(QUERY), st.encode(DOCS)
    cosine = d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(got, cosine, rtol=1e-4, atol=1e-5)


def test_vector_store_scores_and_relevance(st_folder, st):
    from vllm_pool.integrations.langchain import VllmPoolEmbeddings, VllmPoolVectorStore

    store = VllmPoolVectorStore(VllmPoolEmbeddings(model=str(st_folder)))
    store.add_texts(DOCS, ids=[str(i) for i in range(len(DOCS))])
    ref = _st_scores(st, st.encode_query(QUERY), st.encode_document(DOCS))
    hits = store.similarity_search_with_score(QUERY, k=3)
    assert [int(d.id) for d, _ in hits] == list(np.argsort(-ref, kind="stable")[:3])
    np.testing.assert_allclose([s for _, s in hits], np.sort(ref)[::-1][:3], rtol=1e-4, atol=1e-4)
    rel = [r for _, r in store.similarity_search_with_relevance_scores(QUERY, k=len(DOCS))]
    assert all(0.0 <= r <= 1.0 for r in rel) and rel == sorted(rel, reverse=True)


def test_unknown_similarity_is_a_clear_error():
    from types import SimpleNamespace

    from vllm_pool.integrations._similarity import similarity_fn_name

    st = SimpleNamespace(similarity_fn_name="l3")
    llm = SimpleNamespace(model_name="m", model_config=SimpleNamespace(st=st))
    with pytest.raises(ValueError, match="similarity_fn_name 'l3' is not one of"):
        similarity_fn_name(llm)
