"""LlamaIndex conformance: the classes used the way LlamaIndex itself uses them."""

from __future__ import annotations

import asyncio
import copy
import pickle
import time

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.ingestion import IngestionPipeline  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from vllm_pool.integrations.llamaindex import (  # noqa: E402
    VllmPoolColBERTRetriever,
    VllmPoolEmbedding,
    VllmPoolRerank,
)

from vllm_pool import DEFAULT_MODEL  # noqa: E402


@pytest.fixture(scope="module")
def embed_model() -> VllmPoolEmbedding:
    return VllmPoolEmbedding()


@pytest.fixture(scope="module")
def documents(passages: list[dict]) -> list[Document]:
    return [
        Document(
            text=p["text"],
            id_=p["id"],
            metadata={"title": p["title"], "module": p["module"]},
            excluded_embed_metadata_keys=["title", "module"],
            excluded_llm_metadata_keys=["title", "module"],
        )
        for p in passages
    ]


@pytest.fixture(scope="module")
def index(documents: list[Document], embed_model: VllmPoolEmbedding) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(documents, embed_model=embed_model)


# -- VllmPoolEmbedding -------------------------------------------------------------------
def test_embedding_basics(embed_model: VllmPoolEmbedding) -> None:
    assert embed_model.model == DEFAULT_MODEL and embed_model.model_name == DEFAULT_MODEL
    vec = embed_model.get_query_embedding("hello")
    assert len(vec) == 384 and type(vec[0]) is float
    batch = embed_model.get_text_embedding_batch(["a", "b", "c"])
    direct = [o.outputs.embedding for o in embed_model.llm.embed(["a", "b", "c"], use_tqdm=False)]
    np.testing.assert_allclose(batch, direct, atol=1e-6)
    with pytest.raises(ValueError):
        VllmPoolEmbedding(not_a_field=1)


def test_embedding_batches_through_get_text_embeddings(embed_model: VllmPoolEmbedding, monkeypatch) -> None:
    calls: list[int] = []
    original = embed_model.llm.embed

    def spy(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(prompts, *args, **kwargs)

    monkeypatch.setattr(embed_model.llm, "embed", spy)
    embed_model.get_text_embedding_batch([f"t{i}" for i in range(20)])
    assert calls == [20]  # one engine call for the whole batch


def test_batch_errors_name_the_callers_position() -> None:
    """LlamaIndex cuts the list into ``embed_batch_size`` batches and leaves cached texts out;
    an error still names the position in the caller's list, and the model stays usable."""
    from llama_index.core.storage.kvstore import SimpleKVStore

    model = VllmPoolEmbedding(embed_batch_size=4, truncate=False)
    texts = [f"text {i}" for i in range(12)]
    over_long = texts[:9] + ["word " * 2000] + texts[10:]
    with pytest.raises(ValueError, match=r"texts\[9\]"):
        model.get_text_embedding_batch(over_long)
    with pytest.raises(ValueError, match=r"texts\[9\]"):
        asyncio.run(model.aget_text_embedding_batch(over_long))
    with pytest.raises(TypeError, match=r"texts\[6\] must be a string, got NoneType"):
        model.get_text_embedding_batch(texts[:6] + [None] + texts[7:])
    cached = VllmPoolEmbedding(embed_batch_size=4, truncate=False, embeddings_cache=SimpleKVStore())
    cached.get_text_embedding_batch(texts[:5])  # texts 0-4 cached: the batches hold 5-8, 9-11
    with pytest.raises(ValueError, match=r"texts\[9\]"):
        cached.get_text_embedding_batch(over_long)
    np.testing.assert_allclose(
        model.get_text_embedding_batch(texts), cached.get_text_embedding_batch(texts), atol=1e-6
    )


def test_instructions(embed_model: VllmPoolEmbedding) -> None:
    e = VllmPoolEmbedding(query_instruction="query: ", text_instruction="passage: ")
    assert e.llm is embed_model.llm
    assert e.get_query_embedding("x") == pytest.approx(embed_model.get_text_embedding("query: x"), abs=1e-6)
    assert e.get_text_embedding("x") == pytest.approx(embed_model.get_text_embedding("passage: x"), abs=1e-6)


def test_pickle_deepcopy_share_engine(embed_model: VllmPoolEmbedding) -> None:
    e = VllmPoolEmbedding(embed_batch_size=7, query_instruction="q: ")
    for clone in (pickle.loads(pickle.dumps(e)), copy.deepcopy(e)):
        assert clone.llm is embed_model.llm
        assert clone.embed_batch_size == 7 and clone.query_instruction == "q: "
        assert clone.get_query_embedding("x") == e.get_query_embedding("x")


async def test_async_does_not_block(embed_model: VllmPoolEmbedding) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    texts = [f"a somewhat longer sentence number {i}, written to take the model a while" for i in range(400)]
    vecs = await embed_model.aget_text_embedding_batch(texts)
    elapsed = time.perf_counter() - start
    done.set()
    await task
    assert len(vecs) == 400 and elapsed > 0.05 and ticks >= 5, (elapsed, ticks)
    q = await embed_model.aget_query_embedding("x")
    assert q == pytest.approx(embed_model.get_query_embedding("x"), abs=1e-6)


def test_ingestion_pipeline_two_workers(embed_model: VllmPoolEmbedding) -> None:
    docs = [Document(text=f"document number {i} about {'cats' if i % 2 else 'json'}") for i in range(8)]
    pipeline = IngestionPipeline(transformations=[embed_model])
    nodes = pipeline.run(documents=docs, num_workers=2)
    assert len(nodes) == 8
    for node in nodes:
        expected = embed_model.get_text_embedding(node.get_content(metadata_mode="embed"))
        assert node.embedding == pytest.approx(expected, abs=1e-5)


# -- VectorStoreIndex + query engines ----------------------------------------------------
def test_vector_store_index_retrieves(index: VectorStoreIndex, queries: list[dict]) -> None:
    retriever = index.as_retriever(similarity_top_k=5)
    hits = sum(
        any(n.node.metadata["module"] == q["module"] for n in retriever.retrieve(q["query"])) for q in queries
    )
    assert hits >= 0.8 * len(queries)


class _Recorder(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "_Recorder"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event.class_name())


def test_query_engine_with_rerank(index: VectorStoreIndex) -> None:
    recorder = _Recorder()
    root = get_dispatcher()
    root.add_event_handler(recorder)
    try:
        engine = index.as_query_engine(
            llm=MockLLM(max_tokens=8),
            similarity_top_k=8,
            node_postprocessors=[VllmPoolRerank(top_n=3, keep_retrieval_score=True)],
        )
        response = engine.query("How do I compute a SHA-256 hash of some bytes?")
    finally:
        root.event_handlers.remove(recorder)
    assert len(response.source_nodes) == 3
    scores = [n.score for n in response.source_nodes]
    assert scores == sorted(scores, reverse=True)
    assert response.source_nodes[0].node.metadata["module"] == "hashlib"
    assert "retrieval_score" in response.source_nodes[0].node.metadata
    assert "ReRankStartEvent" in recorder.events and "ReRankEndEvent" in recorder.events


def test_rerank_contract() -> None:
    rerank = VllmPoolRerank(top_n=2)
    nodes = [
        NodeWithScore(node=TextNode(text=t), score=0.5) for t in ["cats purr", "json parses", "dogs bark"]
    ]
    with pytest.raises(ValueError, match="query"):
        rerank.postprocess_nodes(nodes)
    assert rerank.postprocess_nodes([], query_str="x") == []
    out = rerank.postprocess_nodes(nodes, query_bundle=QueryBundle("kitten"))
    assert [n.node.text for n in out][0] == "cats purr" and len(out) == 2
    direct = rerank.llm.score("kitten", [n.node.text for n in out], use_tqdm=False)
    assert [n.score for n in out] == pytest.approx([o.outputs.score for o in direct], abs=1e-6)
    clone = pickle.loads(pickle.dumps(rerank))
    assert clone.top_n == 2 and clone.llm is rerank.llm


# -- VllmPoolColBERTRetriever ------------------------------------------------------------
def test_colbert_retriever_query_engine(documents: list[Document], queries: list[dict], tmp_path) -> None:
    retriever = VllmPoolColBERTRetriever.from_documents(documents, similarity_top_k=3)
    results = retriever.retrieve(queries[0]["query"])
    assert len(results) == 3 and all(isinstance(r, NodeWithScore) for r in results)
    assert results[0].node.metadata["module"] == queries[0]["module"]
    assert results[0].node.node_id in {d.doc_id for d in documents}
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))
    response = engine.query(queries[1]["query"])
    assert len(response.source_nodes) == 3

    retriever.save(tmp_path / "colbert")
    loaded = VllmPoolColBERTRetriever.load(tmp_path / "colbert", similarity_top_k=3)
    assert [r.node.node_id for r in loaded.retrieve(queries[0]["query"])] == [r.node.node_id for r in results]


async def test_colbert_retriever_from_nodes_async() -> None:
    nodes = [TextNode(text=t, id_=str(i)) for i, t in enumerate(["cats purr", "dogs bark", "json parses"])]
    retriever = VllmPoolColBERTRetriever.from_nodes(nodes, similarity_top_k=1)
    res = await retriever.aretrieve("kitten")
    assert [r.node.node_id for r in res] == ["0"]


def test_settings_embed_model(embed_model: VllmPoolEmbedding) -> None:
    previous = Settings._embed_model
    try:
        Settings.embed_model = embed_model
        idx = VectorStoreIndex.from_documents([Document(text="cats purr"), Document(text="json parses")])
        assert "cats" in idx.as_retriever(similarity_top_k=1).retrieve("kitten")[0].node.text
    finally:
        Settings._embed_model = previous
