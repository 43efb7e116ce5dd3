"""Legitimate but unusual inputs in the integrations: generators of texts, and lone surrogates
(what ``os.fsdecode`` gives for a non-UTF-8 file name), refused when added and named by position."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from vllm_pool.integrations.langchain import (  # noqa: E402
    VllmPoolColBERTReranker,
    VllmPoolColBERTRetriever,
    VllmPoolEmbeddings,
    VllmPoolReranker,
    VllmPoolVectorStore,
)
from vllm_pool.integrations.llamaindex import VllmPoolColBERTRerank, VllmPoolEmbedding, VllmPoolRerank  # noqa: E402

TEXTS = ["cats purr softly", "dogs bark loudly", "the sea is blue"]
BAD = "caf\udce9"  # os.fsdecode(b"caf\xe9")


def test_generators_of_texts_are_embedded_not_dropped():
    emb = VllmPoolEmbeddings()
    want = emb.embed_documents(TEXTS)
    assert emb.embed_documents(t for t in TEXTS) == want  # langchain-huggingface list()s its input
    assert emb.embed_documents(iter(TEXTS)) == want
    li = VllmPoolEmbedding()
    assert li.get_text_embedding_batch(t for t in TEXTS) == li.get_text_embedding_batch(TEXTS)


@pytest.mark.parametrize(
    "kwargs, where",
    [
        ({"metadatas": [{"title": BAD}, {}, {}]}, "metadatas[0]['title']"),
        ({"metadatas": [{}, {BAD: 1}, {}]}, "metadatas[1] key"),
        ({"ids": ["a", "b", BAD]}, "ids[2]"),
    ],
)
def test_lone_surrogates_refused_when_added_so_saves_keep_working(tmp_path, kwargs, where):
    store = VllmPoolVectorStore(embedding=VllmPoolEmbeddings())
    store.add_texts(TEXTS[:1], ids=["first"])
    with pytest.raises(ValueError, match=r"is not valid Unicode") as exc:
        store.add_texts(TEXTS, **kwargs)
    assert str(exc.value).startswith(where)
    vector = store.embeddings.embed_query("x")
    with pytest.raises(ValueError, match=r"texts\[0\] is not valid Unicode"):
        store.add_embeddings([(BAD, vector)])  # nothing embedded: checked all the same
    assert store.get_by_ids(["first"]) and len(store.get_by_ids(["a", "b"])) == 0
    store.save_local(str(tmp_path / "store"))  # the refused adds left nothing unsaveable
    loaded = VllmPoolVectorStore.load_local(str(tmp_path / "store"), VllmPoolEmbeddings())
    assert [d.id for d in loaded.get_by_ids(["first"])] == ["first"]


def test_dense_index_refuses_a_lone_surrogate_id():
    import numpy as np
    from vllm_pool.retrievers import DenseIndex

    index = DenseIndex(4)
    with pytest.raises(ValueError, match=r"ids\[1\] is not valid Unicode"):
        index.add(np.ones((2, 4), dtype=np.float32), ids=["a", BAD])
    assert len(index) == 0


def test_colbert_classes_name_the_text_with_a_lone_surrogate():
    retriever = VllmPoolColBERTRetriever.from_texts(TEXTS[:2])
    with pytest.raises(ValueError, match=r"^texts\[1\] is not valid Unicode.*nothing was added"):
        retriever.add_texts(["ok", BAD])
    assert len(retriever.index) == 2
    with pytest.raises(ValueError, match=r"^query is not valid Unicode"):
        retriever.invoke(BAD)
    docs = [Document(page_content="ok"), Document(page_content=BAD)]
    with pytest.raises(ValueError, match=r"^documents\[1\] is not valid Unicode"):
        VllmPoolColBERTReranker().compress_documents(docs, "cats")
    with pytest.raises(ValueError, match=r"^query is not valid Unicode"):
        VllmPoolColBERTRerank().postprocess_nodes([NodeWithScore(node=TextNode(text="cats"))], query_str=BAD)
    assert retriever.invoke("cats")  # still usable


def test_bi_encoder_rerankers_name_the_query_and_the_document():
    docs = [Document(page_content="ok"), Document(page_content=BAD)]
    with pytest.raises(ValueError, match=r"^documents\[1\] is not valid Unicode"):
        VllmPoolReranker().compress_documents(docs, "cats")
    with pytest.raises(ValueError, match=r"^query is not valid Unicode"):
        VllmPoolReranker().compress_documents(docs[:1], BAD)
    nodes = [NodeWithScore(node=TextNode(text="ok")), NodeWithScore(node=TextNode(text=BAD))]
    with pytest.raises(ValueError, match=r"^documents\[1\] is not valid Unicode"):
        VllmPoolRerank().postprocess_nodes(nodes, query_str="cats")


def test_colbert_retrievers_check_k_and_batch_size_when_built():
    """A bad ``k`` failed only at the first query (LangChain), ``similarity_top_k=True`` or
    ``2.0`` there with a message naming ``k`` (LlamaIndex)."""
    from pydantic import ValidationError
    from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever as LlamaColBERT

    for bad in ({"k": 0}, {"k": -2}, {"batch_size": 0}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            VllmPoolColBERTRetriever(**bad)
    for name, value, error in [
        ("similarity_top_k", 0, ValueError),
        ("similarity_top_k", True, TypeError),
        ("similarity_top_k", 2.0, TypeError),
        ("batch_size", 0, ValueError),
    ]:
        with pytest.raises(error, match=f"^{name} must be"):
            LlamaColBERT(**{name: value})
    assert VllmPoolColBERTRetriever(k=2).k == LlamaColBERT(similarity_top_k=2).similarity_top_k == 2
