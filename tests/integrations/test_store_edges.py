"""Edges of the stores and retrievers a framework user meets: an add that fails changes
nothing, generated ids never replace documents, delete-all keeps the store's settings,
callable filters see the user's metadata only, euclidean stores rank exactly, objects that
hold an index refuse pickle / deepcopy with a message naming save / load, and the LlamaIndex
rerankers take ``top_n=None`` like the LangChain ones."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from vllm_pool.integrations.langchain import VllmPoolColBERTRetriever as LCRetriever
from vllm_pool.integrations.langchain import VllmPoolEmbeddings, VllmPoolVectorStore
from vllm_pool.integrations.llamaindex import VllmPoolColBERTRerank, VllmPoolRerank
from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever as LIRetriever
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex

TEXTS = ["Kittens are young cats.", "Python is a programming language.", "Dogs bark at night."]
FILLER = " ".join(["The weather report mentioned clouds, rain and wind over the northern hills."] * 30)


class Fixed(Embeddings):
    """Random vectors per text length; ``similarity_fn_name`` as a model folder names it."""

    def __init__(self, name: str = "cosine", dim: int = 16) -> None:
        self.similarity_fn_name, self.dim = name, dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [np.random.default_rng(len(t)).normal(size=self.dim).tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_a_colbert_add_with_an_id_twice_changes_nothing():
    retriever = LCRetriever.from_texts(TEXTS[:2], ids=["a", "b"], k=5)
    with pytest.raises(ValueError, match="unique within one add.*'a' is given twice"):
        retriever.add_texts(["new one", "new two"], ids=["a", "a"])
    assert {d.id: d.page_content for d in retriever.invoke("cats")} == {"a": TEXTS[0], "b": TEXTS[1]}

    # a long document's window id ("x#w1") taken by another document of the same call
    split = LCRetriever.from_texts(TEXTS[:1], ids=["a"], k=5, split_long_documents=True)
    with pytest.raises(ValueError, match="'x#w1' is given twice"):
        split.add_texts([FILLER, "short"], ids=["x", "x#w1"])
    assert len(split.index) == 1
    li = LIRetriever.from_nodes([TextNode(text=TEXTS[0], id_="a")])
    with pytest.raises(ValueError, match="'a' is given twice"):
        li.add_nodes([TextNode(text="one", id_="a"), TextNode(text="two", id_="a")])
    assert [n.node.node_id for n in li.retrieve("cats")] == ["a"]


@pytest.mark.parametrize("kind", ["dense", "multivector"])
def test_generated_ids_never_replace_a_document(kind):
    rng = np.random.default_rng(0)
    if kind == "dense":
        index, vectors = DenseIndex(8), [rng.normal(size=(1, 8)), rng.normal(size=(2, 8))]
    else:
        index = MultiVectorIndex(8)
        vectors = [[rng.normal(size=(3, 8))], [rng.normal(size=(2, 8)), rng.normal(size=(4, 8))]]
    index.add(vectors[0], ids=["1"], metadatas=[{"who": "user"}])
    new_ids = index.add(vectors[1])
    assert len(index) == 3 and "1" not in new_ids and len(set(new_ids)) == 2
    assert index.get(["1"])[0].metadata == {"who": "user"}


def test_delete_all_keeps_the_int8_ranges():
    calib = np.random.default_rng(0).normal(size=(200, 16))
    store = VllmPoolVectorStore(Fixed(), storage="int8", calibration_embeddings=calib)
    store.add_texts(["first"], ids=["a"])
    ranges = store.index._ranges.copy()
    assert store.delete() and len(store.index) == 0
    assert store.add_texts(["second"], ids=["b"]) == ["b"]  # one vector: needs the kept ranges
    np.testing.assert_array_equal(store.index._ranges, ranges)
    assert [d.id for d in store.similarity_search("second", k=3)] == ["b"]


def test_callable_filters_see_the_users_metadata_only():
    docs = [FILLER + " The vault password is pineapple.", "short"]
    metas = [{"src": "long"}, {"src": "short"}]
    retriever = LCRetriever.from_texts(docs, metadatas=metas, ids=["l", "s"], k=5, split_long_documents=True)
    seen: list[dict] = []
    hits = retriever.invoke("vault password", filter=lambda m: seen.append(m) or m == {"src": "long"})
    assert [d.id for d in hits] == ["l"] and seen and all(m in metas for m in seen)
    assert [d.id for d in retriever.invoke("vault password", filter={"src": "long"})] == ["l"]


@pytest.mark.parametrize("name", ["euclidean", "manhattan"])
def test_distance_stores_rank_every_document_exactly(name):
    rng = np.random.default_rng(1)
    far = rng.normal(size=(60, 16)) * 10  # long vectors: large inner products, far away
    query = rng.normal(size=16)
    near = query + rng.normal(size=16) * 0.1
    vectors = np.vstack([far, near[None]])
    ids = [f"far{i}" for i in range(60)] + ["near"]
    store = VllmPoolVectorStore(Fixed(name))
    store.add_embeddings(list(zip(ids, vectors.tolist())), ids=ids)
    found = store.similarity_search_with_score_by_vector(query.tolist(), k=5)
    if name == "euclidean":
        dist = np.sqrt(((vectors - query) ** 2).sum(1))
    else:
        dist = np.abs(vectors - query).sum(1)
    best = np.argsort(dist)[:5]
    assert [d.id for d, _ in found] == [ids[i] for i in best]
    np.testing.assert_allclose([s for _, s in found], -dist[best], rtol=1e-5)


def test_objects_holding_an_index_refuse_pickle_and_deepcopy_by_name():
    store = VllmPoolVectorStore.from_texts(TEXTS, Fixed())
    lc = LCRetriever.from_texts(TEXTS, k=1)
    li = LIRetriever.from_nodes([TextNode(text=TEXTS[0])])
    cases = [(store, "VllmPoolVectorStore.*save_local"), (lc, "VllmPoolColBERTRetriever.*save")]
    cases += [(li, "VllmPoolColBERTRetriever.*save"), (lc.index, "MultiVectorIndex.*save")]
    for obj, message in cases:
        for copier in (pickle.dumps, copy.deepcopy):
            with pytest.raises(TypeError, match=message):
                copier(obj)
    assert lc.model_copy().invoke("kitten")[0].page_content == lc.invoke("kitten")[0].page_content
    assert [d.id for d in store.similarity_search("Dogs", k=3)]  # still usable
    embeddings = pickle.loads(pickle.dumps(VllmPoolEmbeddings()))
    assert len(embeddings.embed_query("x")) == 384


def test_llamaindex_rerankers_take_top_n_none():
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in TEXTS]
    for cls in (VllmPoolRerank, VllmPoolColBERTRerank):
        with warnings.catch_warnings():  # VllmPoolRerank warns (once) on a bi-encoder
            warnings.simplefilter("ignore")
            reranker = cls(top_n=None)
        out = reranker.postprocess_nodes(nodes, QueryBundle("kittens"))
        assert len(out) == 3 and out[0].node.text == TEXTS[0]
        assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
        with pytest.raises(ValueError):
            cls(top_n=0)
