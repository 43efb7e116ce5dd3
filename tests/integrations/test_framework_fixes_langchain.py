"""LangChain fixes, checked against LangChain's own classes: ``ainvoke`` with ``k`` / ``filter``
on the ColBERT retriever, ``score_threshold`` as LangChain's FAISS applies it, and ``delete`` /
``get_by_ids`` refusing a single string."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from vllm_pool.integrations.langchain import (  # noqa: E402
    VllmPoolColBERTRetriever,
    VllmPoolEmbeddings,
    VllmPoolVectorStore,
)

TEXTS = [
    "a cat sat on the mat",
    "kittens are small cats",
    "the stock market fell",
    "python code with a function",
    "dogs bark at night",
]
METAS = [{"kind": "pet"}, {"kind": "pet"}, {"kind": "money"}, {"kind": "code"}, {"kind": "pet"}]


# -- 1. ainvoke(query, k=..., filter=...) on the ColBERT retriever -------------------------
@pytest.fixture(scope="module")
def colbert() -> VllmPoolColBERTRetriever:
    return VllmPoolColBERTRetriever.from_texts(TEXTS, METAS, ids=[str(i) for i in range(len(TEXTS))], k=4)


def test_colbert_ainvoke_takes_k_and_filter_like_invoke(colbert: VllmPoolColBERTRetriever) -> None:
    for kwargs in ({"k": 2}, {"filter": {"kind": "pet"}}, {"k": 1, "filter": {"kind": "money"}}, {}):
        sync = colbert.invoke("kitten", **kwargs)
        got = asyncio.run(colbert.ainvoke("kitten", **kwargs))
        assert [(d.id, d.metadata) for d in got] == [(d.id, d.metadata) for d in sync], kwargs
    assert len(asyncio.run(colbert.ainvoke("kitten", k=2))) == 2
    assert {d.metadata["kind"] for d in asyncio.run(colbert.ainvoke("kitten", filter={"kind": "pet"}))} == {
        "pet"
    }
    batched = asyncio.run(colbert.abatch(["kitten", "stocks"], k=1))
    assert [len(docs) for docs in batched] == [1, 1]


def test_colbert_ainvoke_reports_to_callbacks(colbert: VllmPoolColBERTRetriever) -> None:
    from langchain_core.callbacks import AsyncCallbackHandler

    class Seen(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.ends: list[int] = []

        async def on_retriever_end(self, documents, **kwargs) -> None:  # type: ignore[override]
            self.ends.append(len(documents))

    seen = Seen()
    asyncio.run(colbert.ainvoke("kitten", config={"callbacks": [seen]}, k=3))
    assert seen.ends == [3]


# -- 3. score_threshold, as LangChain's FAISS applies it ------------------------------------
@pytest.fixture(scope="module")
def emb() -> VllmPoolEmbeddings:
    return VllmPoolEmbeddings()


@pytest.fixture(scope="module")
def stores(emb: VllmPoolEmbeddings):
    """Our store and LangChain's FAISS (inner product of normalized vectors: cosine, the
    score our store returns) over the same texts and metadata."""
    faiss_module = pytest.importorskip("langchain_community.vectorstores")
    pytest.importorskip("faiss")
    from langchain_community.vectorstores.utils import DistanceStrategy

    ours = VllmPoolVectorStore.from_texts(TEXTS, emb, METAS)
    faiss = faiss_module.FAISS.from_texts(
        TEXTS, emb, METAS, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT
    )
    return ours, faiss


def _texts(docs) -> list[str]:
    return [d.page_content for d in docs]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_score_threshold_keeps_what_faiss_keeps(stores, emb, threshold: float) -> None:
    ours, faiss = stores
    q = "kitten"
    scored = ours.similarity_search_with_score(q, k=5, score_threshold=threshold)
    reference = faiss.similarity_search_with_score(q, k=5, score_threshold=threshold)
    assert _texts(d for d, _ in scored) == _texts(d for d, _ in reference)
    assert [s for _, s in scored] == pytest.approx([float(s) for _, s in reference], abs=1e-5)
    assert all(s >= threshold for _, s in scored)
    assert _texts(ours.similarity_search(q, k=5, score_threshold=threshold)) == _texts(
        faiss.similarity_search(q, k=5, score_threshold=threshold)
    )
    vector = emb.embed_query(q)
    assert _texts(ours.similarity_search_by_vector(vector, k=5, score_threshold=threshold)) == _texts(
        faiss.similarity_search_by_vector(vector, k=5, score_threshold=threshold)
    )
    pet = {"kind": "pet"}
    assert _texts(ours.similarity_search(q, k=5, filter=pet, score_threshold=threshold)) == _texts(
        faiss.similarity_search(q, k=5, filter=pet, score_threshold=threshold)
    )
    search_kwargs = {"k": 5, "score_threshold": threshold}
    assert _texts(ours.as_retriever(search_kwargs=search_kwargs).invoke(q)) == _texts(
        faiss.as_retriever(search_kwargs=search_kwargs).invoke(q)
    )
    assert _texts(asyncio.run(ours.asimilarity_search(q, k=5, score_threshold=threshold))) == _texts(
        faiss.similarity_search(q, k=5, score_threshold=threshold)
    )


def test_score_threshold_cuts_results(stores) -> None:
    ours, _ = stores
    assert len(ours.similarity_search("kitten", k=5)) == 5
    assert 0 < len(ours.similarity_search("kitten", k=5, score_threshold=0.5)) < 5
    assert ours.similarity_search("kitten", k=5, score_threshold=1.01) == []
    assert len(ours.as_retriever(search_kwargs={"k": 5, "score_threshold": 0.5}).invoke("kitten")) < 5


def test_relevance_threshold_is_applied_once(stores) -> None:
    """``similarity_score_threshold`` retrievers threshold the relevance in [0, 1], not the score."""
    ours, _ = stores
    retriever = ours.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": 5, "score_threshold": 0.7}
    )
    expected = [d for d, r in ours.similarity_search_with_relevance_scores("kitten", k=5) if r >= 0.7]
    assert _texts(retriever.invoke("kitten")) == _texts(expected)


def test_score_threshold_on_distance_scores() -> None:
    """Euclidean stores return negated distances: the threshold keeps ``-distance >= t``."""

    class EuclideanFake(DeterministicFakeEmbedding):
        @property
        def similarity_fn_name(self) -> str:
            return "euclidean"

    fake = EuclideanFake(size=8)
    store = VllmPoolVectorStore.from_texts(TEXTS, fake)
    q = np.asarray(fake.embed_query("kitten"))
    distances = {t: float(np.linalg.norm(np.asarray(fake.embed_query(t)) - q)) for t in TEXTS}
    cut = sorted(distances.values())[2] + 1e-4  # the 3 nearest
    got = store.similarity_search_with_score("kitten", k=5, score_threshold=-cut)
    assert sorted(d.page_content for d, _ in got) == sorted(t for t, d in distances.items() if d <= cut)
    assert len(got) == 3 and all(s >= -cut for _, s in got)


def test_score_threshold_must_be_a_number(stores) -> None:
    ours, _ = stores
    with pytest.raises(TypeError, match="score_threshold must be a number"):
        ours.similarity_search("kitten", score_threshold="0.5")


# -- 4. delete / get_by_ids with a single string ---------------------------------------------
def test_store_delete_and_get_by_ids_refuse_a_single_string() -> None:
    store = VllmPoolVectorStore.from_texts(["one", "two", "twelve"], DeterministicFakeEmbedding(size=8),
                                           ids=["1", "2", "12"])  # fmt: skip
    with pytest.raises(TypeError, match="ids must be a list of ids, not a single string"):
        store.delete("12")
    with pytest.raises(TypeError, match="ids must be a list of ids, not a single string"):
        store.get_by_ids("12")
    assert sorted(store.index.ids()) == ["1", "12", "2"]  # nothing deleted
    assert store.delete(["12"]) is True
    assert sorted(store.index.ids()) == ["1", "2"]
    assert [d.id for d in store.get_by_ids(["1"])] == ["1"]
    empty = VllmPoolVectorStore(DeterministicFakeEmbedding(size=8))
    with pytest.raises(TypeError, match="not a single string"):
        empty.delete("12")  # also before the first add


def test_colbert_delete_refuses_a_single_string() -> None:
    retriever = VllmPoolColBERTRetriever.from_texts(["one", "two", "twelve"], ids=["1", "2", "12"])
    with pytest.raises(TypeError, match="ids must be a list of ids, not a single string"):
        retriever.delete("12")
    assert sorted(retriever.index.ids()) == ["1", "12", "2"]
    assert retriever.delete(["12"]) == 1
