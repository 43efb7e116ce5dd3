"""Typical LangChain FAISS-store and RAGatouille-style calls, run against our classes.

Filters, persistence and the FAISS helpers are compared with LangChain's own ``FAISS``
store on the same (deterministic fake) embeddings; ingestion and ColBERT use the engine.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("langchain_core")
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from vllm_pool.integrations.langchain import (  # noqa: E402
    VllmPoolColBERTRetriever,
    VllmPoolEmbeddings,
    VllmPoolVectorStore,
)
from vllm_pool.retrievers import IndexFormatError  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.vectorstores import FAISS  # noqa: E402
    from langchain_community.vectorstores.utils import DistanceStrategy  # noqa: E402

TEXTS = [f"passage {i} about {['cats', 'dogs', 'python', 'rust'][i % 4]}" for i in range(24)]
TOPICS = ["cats", "dogs", "python", "rust"]
METAS = [{"year": 2020 + i % 6, "topic": TOPICS[i % 4], "n": i} for i in range(24)]
IDS = [f"d{i}" for i in range(24)]
FILTERS = [
    {"year": {"$gte": 2023}},
    {"topic": {"$in": ["cats", "rust"]}},
    {"$or": [{"year": 2020}, {"topic": "python"}]},
    {"topic": ["cats", "dogs"]},
    {"topic": {"$eq": "dogs"}},
    {"$and": [{"year": {"$lt": 2024}}, {"$not": {"topic": "cats"}}]},
    {"n": {"$nin": [1, 2, 3]}, "year": {"$neq": 2021}},
]


@pytest.fixture(scope="module")
def fake() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=16)


@pytest.fixture(scope="module")
def pair(fake):
    """The same documents in LangChain's FAISS (cosine: inner product of normalized vectors) and ours."""
    with warnings.catch_warnings():  # it warns, yet normalizes both sides: inner products = cosine
        warnings.simplefilter("ignore", UserWarning)
        inner_product = DistanceStrategy.MAX_INNER_PRODUCT
        theirs = FAISS.from_texts(
            TEXTS, fake, METAS, ids=IDS, normalize_L2=True, distance_strategy=inner_product
        )
    return theirs, VllmPoolVectorStore.from_texts(TEXTS, fake, METAS, ids=IDS)


@pytest.mark.parametrize("flt", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_return_what_langchain_faiss_returns(pair, flt):
    theirs, ours = pair
    q = "a question about pets"
    want = theirs.similarity_search_with_score(q, k=len(TEXTS), filter=flt, fetch_k=len(TEXTS))
    got = ours.similarity_search_with_score(q, k=len(TEXTS), filter=flt)
    assert want and [d.id for d, _ in got] == [d.id for d, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    # MMR: LangChain filters its 2 * fetch_k unfiltered candidates; ours are the filtered best
    keep = {d.id for d, _ in want}
    assert {d.id for d in ours.max_marginal_relevance_search(q, k=3, fetch_k=10, filter=flt)} <= keep


def test_unknown_operator_raises_even_on_an_empty_store(fake):
    with pytest.raises(ValueError, match=r"\$regex"):
        VllmPoolVectorStore(fake).similarity_search("q", filter={"topic": {"$regex": "c.*"}})


def test_faiss_persistence_and_helpers(pair, fake, tmp_path):
    theirs, ours = pair
    # save_local / load_local with LangChain's signature; the flag is accepted and ignored
    ours.save_local(tmp_path, index_name="pets")
    theirs.save_local(tmp_path / "lc", index_name="pets")
    assert not list(tmp_path.glob("**/pets.pkl")) or (tmp_path / "lc" / "pets.pkl").exists()
    loaded = VllmPoolVectorStore.load_local(
        tmp_path, fake, index_name="pets", allow_dangerous_deserialization=False
    )
    assert loaded.similarity_search_with_score("cats", k=5) == ours.similarity_search_with_score("cats", k=5)
    with pytest.raises(IndexFormatError, match="LangChain FAISS store"):
        VllmPoolVectorStore.load_local(tmp_path / "lc", fake, index_name="pets")
    with pytest.raises(ValueError, match="index_name"):
        ours.save_local(tmp_path, index_name="../escape")
    # an older save_local(folder) (the index is the folder itself) still loads
    ours.index.save(tmp_path / "flat")
    assert len(VllmPoolVectorStore.load_local(tmp_path / "flat", fake)) == len(TEXTS)

    # add_embeddings / from_embeddings / merge_from, as on LangChain's FAISS
    vectors = fake.embed_documents(TEXTS)
    pairs = list(zip(TEXTS, vectors))
    a = VllmPoolVectorStore.from_embeddings(pairs[:12], fake, METAS[:12], ids=IDS[:12])
    b = VllmPoolVectorStore(fake)
    assert b.add_embeddings(zip(TEXTS[12:], vectors[12:]), METAS[12:], ids=IDS[12:]) == IDS[12:]
    lc_a = FAISS.from_embeddings(pairs[:12], fake, METAS[:12], ids=IDS[:12])
    lc_b = FAISS.from_embeddings(pairs[12:], fake, METAS[12:], ids=IDS[12:])
    a.merge_from(b)
    lc_a.merge_from(lc_b)
    assert len(a) == len(TEXTS) and a.get_by_ids(IDS) == lc_a.get_by_ids(IDS)
    q = "python"
    assert [d.id for d in a.similarity_search(q, k=6)] == [d.id for d in ours.similarity_search(q, k=6)]
    assert [d.id for d in a.max_marginal_relevance_search(q, k=4, fetch_k=12)] == [
        d.id for d in theirs.max_marginal_relevance_search(q, k=4, fetch_k=12)
    ]
    with pytest.raises(ValueError, match="exist in both"):
        a.merge_from(b)
    assert len(a) == len(TEXTS)
    with pytest.raises(TypeError, match="pair"):
        b.add_embeddings([("only text",)])


def test_single_strings_and_unsavable_metadata_are_refused(fake):
    store = VllmPoolVectorStore(fake)
    with pytest.raises(TypeError, match="single string"):
        store.add_texts("hello")
    with pytest.raises(TypeError, match="single string"):
        VllmPoolVectorStore.from_texts("hello", fake)
    with pytest.raises(TypeError, match=r"metadatas\[1\].*cannot be saved"):
        store.add_texts(["a", "b"], [{"ok": 1}, {"when": object()}])
    with pytest.raises(TypeError, match=r"metadatas\[0\].*finite"):
        store.add_texts(["a"], [{"x": float("nan")}])
    assert len(store) == 0


def test_blank_pages_embed_and_errors_name_the_callers_position():
    emb = VllmPoolEmbeddings(batch_size=8)
    pages = [f"page {i} of a report" for i in range(30)]
    pages[3] = ""  # a blank PDF page: [CLS] [SEP], embedded as Sentence Transformers does
    store = VllmPoolVectorStore.from_texts(pages, emb, ids=[str(i) for i in range(30)])
    assert len(store) == 30
    np.testing.assert_allclose(store.index.get(["3"])[0].vectors, emb.embed_query(""), atol=1e-5)
    bad = [f"new page {i}" for i in range(30)]
    bad[27] = "broken \ud800 text"  # in the fourth batch of 8, at 3 inside it
    with pytest.raises(ValueError, match=r"texts\[27\] is not valid Unicode.*nothing was added"):
        store.add_texts(bad, ids=[f"n{i}" for i in range(30)])
    assert len(store) == 30 and not store.get_by_ids(["n0"])  # all or nothing


def test_ragatouille_style_colbert_use(tmp_path):
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
    from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever as LIRetriever

    docs = ["Cats purr when content.", "Dogs bark at strangers.", "Python lists are mutable.", ""]
    metas = [{"kind": "pet", "year": 2021}, {"kind": "pet", "year": 2024}, {"kind": "code", "year": 2024}, {}]
    # RAGatouille: index(collection, document_ids, document_metadatas), then search(query, k)
    retriever = VllmPoolColBERTRetriever.from_texts(docs, metadatas=metas, ids=["c", "d", "p", "blank"], k=2)
    assert [d.id for d in retriever.invoke("kitten purring", k=1)] == ["c"]
    got = retriever.invoke("animals", filter={"$and": [{"kind": "pet"}, {"year": {"$gte": 2022}}]})
    assert [d.id for d in got] == ["d"]
    assert {d.id for d in retriever.invoke("x", k=4, filter={"kind": {"$nin": ["pet"]}})} == {"p", "blank"}
    with pytest.raises(ValueError, match=r"\$near"):
        retriever.invoke("x", filter={"year": {"$near": 1}})
    with pytest.raises(TypeError, match="single string"):
        VllmPoolColBERTRetriever.from_texts("hello")
    with pytest.raises(TypeError, match="single string"):
        retriever.add_texts("hello")
    assert len(retriever.index) == 4

    nodes = [TextNode(text=t, id_=i, metadata=m) for t, i, m in zip(docs[:3], "cdp", metas[:3])]
    newer_pets = MetadataFilters(
        filters=[
            MetadataFilter(key="kind", value="pet"),
            MetadataFilters(
                filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.LTE)],
                condition=FilterCondition.NOT,
            ),
        ],
        condition=FilterCondition.AND,
    )
    li = LIRetriever.from_nodes(nodes, similarity_top_k=3, filters=newer_pets)
    assert [n.node.node_id for n in li.retrieve("animals")] == ["d"]
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=[2021], operator=FilterOperator.IN),
            MetadataFilter(key="kind", value="code", operator=FilterOperator.EQ),
        ],
        condition=FilterCondition.OR,
    )
    found = LIRetriever(li.index, similarity_top_k=3, filters=either).retrieve("x")
    assert {n.node.node_id for n in found} == {"c", "p"}
    text_match = MetadataFilter(key="kind", value="pe", operator=FilterOperator.TEXT_MATCH)
    with pytest.raises(ValueError, match="text_match"):
        LIRetriever(li.index, filters=MetadataFilters(filters=[text_match]))
    with pytest.raises(TypeError, match="single str"):
        li.add_nodes("hello")
