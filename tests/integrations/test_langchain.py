"""LangChain classes beyond the standard suites: sharing, pickling, threads, async, RAG pieces."""

from __future__ import annotations

import asyncio
import copy
import importlib
import pickle
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from vllm_pool.integrations import EngineOptions, get_engine  # noqa: E402
from vllm_pool.integrations.langchain import (  # noqa: E402
    VllmPoolColBERTRetriever,
    VllmPoolEmbeddings,
    VllmPoolReranker,
    VllmPoolVectorStore,
)

from vllm_pool import DEFAULT_MODEL, LLM  # noqa: E402


@pytest.fixture(scope="module")
def emb() -> VllmPoolEmbeddings:
    return VllmPoolEmbeddings()


@pytest.fixture(scope="module")
def store(emb: VllmPoolEmbeddings, passages: list[dict]) -> VllmPoolVectorStore:
    return VllmPoolVectorStore.from_texts(
        [p["text"] for p in passages],
        emb,
        [{"title": p["title"], "module": p["module"]} for p in passages],
        ids=[p["id"] for p in passages],
    )


# -- VllmPoolEmbeddings ------------------------------------------------------------------
def test_default_model_and_floats(emb: VllmPoolEmbeddings) -> None:
    assert emb.model == DEFAULT_MODEL
    vec = emb.embed_query("hello world")
    assert len(vec) == 384 and all(type(x) is float for x in vec)
    docs = emb.embed_documents(["a", "b c"])
    assert len(docs) == 2 and all(type(x) is float for x in docs[1])
    assert emb.embed_documents([]) == []
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)  # the model's Normalize module


def test_matches_engine(emb: VllmPoolEmbeddings) -> None:
    texts = ["The quick brown fox.", "json.loads parses JSON."]
    direct = [o.outputs.embedding for o in emb.llm.embed(texts, use_tqdm=False)]
    np.testing.assert_allclose(emb.embed_documents(texts), direct, rtol=0, atol=1e-6)


def test_extra_fields_forbidden() -> None:
    with pytest.raises(ValueError, match="not_a_field"):
        VllmPoolEmbeddings(not_a_field=1)
    with pytest.raises(ValueError, match="unknown engine_kwargs"):
        VllmPoolEmbeddings(engine_kwargs={"max_num_seq": 2})


def test_field_docs() -> None:
    fields = VllmPoolEmbeddings.model_fields
    for name in ("model", "dtype", "device", "batch_size", "normalize", "dimensions", "query_instruction",
                 "document_instruction", "query_prompt_name", "document_prompt_name", "show_progress",
                 "engine_kwargs"):  # fmt: skip
        assert fields[name].description, name


def test_same_config_shares_engine(emb: VllmPoolEmbeddings, default_model_dir) -> None:
    other = VllmPoolEmbeddings(batch_size=3, query_instruction="q: ")  # non-engine fields differ
    assert other.llm is emb.llm
    assert emb.llm is get_engine(EngineOptions.make(DEFAULT_MODEL))
    by_folder = VllmPoolEmbeddings(model=str(default_model_dir))  # another configuration
    assert by_folder.llm is not emb.llm
    assert by_folder.embed_query("x") == pytest.approx(emb.embed_query("x"), abs=1e-6)


def test_pickle_and_deepcopy_share_engine(emb: VllmPoolEmbeddings) -> None:
    for clone in (pickle.loads(pickle.dumps(emb)), copy.deepcopy(emb), emb.model_copy(deep=True)):
        assert clone == emb
        assert clone.llm is emb.llm
        assert clone.embed_query("pickled") == emb.embed_query("pickled")


def test_instructions_and_prompts(emb: VllmPoolEmbeddings) -> None:
    prefixed = VllmPoolEmbeddings(query_instruction="query: ", document_instruction="passage: ")
    assert prefixed.embed_query("cats") == pytest.approx(emb.embed_query("query: cats"), abs=1e-6)
    assert prefixed.embed_documents(["cats"])[0] == pytest.approx(emb.embed_query("passage: cats"), abs=1e-6)
    with pytest.raises(ValueError, match="prompt name 'nope'"):
        VllmPoolEmbeddings(query_prompt_name="nope").embed_query("x")


def test_dimensions_and_normalize(emb: VllmPoolEmbeddings) -> None:
    raw = VllmPoolEmbeddings(normalize=False).embed_query("hello")
    assert np.linalg.norm(raw) != pytest.approx(1.0, abs=1e-3)
    full = np.asarray(emb.embed_query("hello"))
    assert np.asarray(raw) / np.linalg.norm(raw) == pytest.approx(full, abs=1e-5)
    with pytest.raises(ValueError, match="matryoshka"):
        VllmPoolEmbeddings(dimensions=64).embed_query("hello")  # MiniLM is not Matryoshka


def test_threads_give_same_results(emb: VllmPoolEmbeddings) -> None:
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(24)]
    expected = emb.embed_documents(texts)
    chunks = [texts[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(emb.embed_documents, chunks))
    for i, chunk in enumerate(results):
        np.testing.assert_allclose(chunk, expected[i::4], atol=1e-5)


async def test_aembed_does_not_block_the_loop(emb: VllmPoolEmbeddings) -> None:
    texts = [f"a somewhat longer sentence number {i}, written to take the model a while" for i in range(400)]
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    vectors = await emb.aembed_documents(texts)
    elapsed = time.perf_counter() - start
    done.set()
    await task
    assert len(vectors) == len(texts)
    assert await emb.aembed_query("q") == pytest.approx(emb.embed_query("q"), abs=1e-6)
    assert elapsed > 0.05 and ticks >= 5, (elapsed, ticks)


# -- VllmPoolReranker --------------------------------------------------------------------
def test_reranker_orders_copies(passages: list[dict]) -> None:
    chosen = [p for p in passages if p["module"] in ("json", "csv", "gzip", "uuid")]
    docs = [Document(page_content=p["text"], metadata={"title": p["title"]}) for p in chosen]
    before = copy.deepcopy(docs)
    reranker = VllmPoolReranker(top_n=3)
    out = reranker.compress_documents(docs, "How do I parse a JSON string?")
    assert docs == before  # inputs untouched
    assert len(out) == 3
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)
    assert out[0].metadata["title"].startswith("json")
    expected = reranker.llm.score(
        "How do I parse a JSON string?", [d.page_content for d in out], use_tqdm=False
    )
    assert scores == pytest.approx([o.outputs.score for o in expected], abs=1e-6)
    assert reranker.compress_documents([], "q") == []
    assert len(VllmPoolReranker(top_n=None).compress_documents(docs, "q")) == len(docs)


def test_reranker_cross_encoder(tmp_path) -> None:
    import tiny_models

    folder = tiny_models.bert(tmp_path / "ce", cls="BertForSequenceClassification", num_labels=1)
    llm = LLM(str(folder))
    if "score" not in llm.get_supported_tasks():
        pytest.skip("the engine does not run this tiny model as a cross-encoder")
    reranker = VllmPoolReranker(model=str(folder), top_n=2)
    docs = [Document(page_content=t) for t in ["alpha beta", "gamma", "delta epsilon zeta"]]
    out = reranker.compress_documents(docs, "alpha")
    direct = sorted(
        (o.outputs.score for o in llm.score("alpha", [d.page_content for d in docs])), reverse=True
    )
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(direct[:2], abs=1e-5)


def test_contextual_compression_retriever(store: VllmPoolVectorStore) -> None:
    ccr_module = pytest.importorskip("langchain_classic.retrievers")
    retriever = ccr_module.ContextualCompressionRetriever(
        base_compressor=VllmPoolReranker(top_n=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 8}),
    )
    docs = retriever.invoke("How can I run a shell command and capture its output?")
    assert len(docs) == 2
    assert docs[0].metadata["module"] == "subprocess"
    assert docs[0].metadata["relevance_score"] >= docs[1].metadata["relevance_score"]


# -- VllmPoolVectorStore -----------------------------------------------------------------
def test_store_finds_relevant_passages(store: VllmPoolVectorStore, queries: list[dict]) -> None:
    hits = 0
    for q in queries:
        results = store.similarity_search_with_score(q["query"], k=5)
        scores = [s for _, s in results]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
        hits += any(d.metadata["module"] == q["module"] for d, _ in results)
    assert hits >= 0.8 * len(queries)


def test_store_filters_and_relevance(store: VllmPoolVectorStore) -> None:
    docs = store.similarity_search("compress data", k=3, filter={"module": "gzip"})
    assert docs and all(d.metadata["module"] == "gzip" for d in docs)
    docs = store.similarity_search("compress data", k=3, filter=lambda m: m["module"].startswith("h"))
    assert docs and all(d.metadata["module"].startswith("h") for d in docs)
    rel = store.similarity_search_with_relevance_scores("compress data", k=3)
    assert all(0.0 <= s <= 1.0 for _, s in rel)
    mmr = store.max_marginal_relevance_search("compress data", k=3, fetch_k=10)
    assert len(mmr) == 3 and len({d.id for d in mmr}) == 3
    assert store.as_retriever(search_kwargs={"k": 2}).invoke("sha256 hash")[0].metadata["module"] == "hashlib"


def test_store_save_load(store: VllmPoolVectorStore, emb: VllmPoolEmbeddings, tmp_path) -> None:
    store.save_local(tmp_path / "store")
    assert not list((tmp_path / "store").glob("*.pkl"))
    loaded = VllmPoolVectorStore.load_local(tmp_path / "store", emb)
    q = "How do I read rows from a CSV file?"
    assert loaded.similarity_search_with_score(q, k=4) == store.similarity_search_with_score(q, k=4)
    assert loaded.get_by_ids(["json#0"]) == store.get_by_ids(["json#0"])
    empty = VllmPoolVectorStore(emb)
    empty.save_local(tmp_path / "empty")
    assert VllmPoolVectorStore.load_local(tmp_path / "empty", emb).similarity_search("x") == []


def test_store_delete_all_and_wrong_embedding_type(emb: VllmPoolEmbeddings) -> None:
    s = VllmPoolVectorStore.from_texts(["a", "b"], emb, ids=["1", "2"])
    s.delete()
    assert len(s) == 0 and s.similarity_search("a") == []
    s.add_texts(["c"], ids=["3"])
    assert [d.id for d in s.similarity_search("c")] == ["3"]
    with pytest.raises(TypeError, match="Embeddings"):
        VllmPoolVectorStore(embedding="not embeddings")  # type: ignore[arg-type]
    assert isinstance(s.embeddings, Embeddings)


def test_store_concurrent_adds(emb: VllmPoolEmbeddings) -> None:
    s = VllmPoolVectorStore(emb)

    def add(i: int) -> None:
        s.add_texts([f"text {i}-{j}" for j in range(5)], ids=[f"{i}-{j}" for j in range(5)])

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(s) == 20


# -- VllmPoolColBERTRetriever ------------------------------------------------------------
def test_colbert_retriever(passages: list[dict], queries: list[dict], tmp_path) -> None:
    docs = [Document(page_content=p["text"], metadata={"module": p["module"]}, id=p["id"]) for p in passages]
    retriever = VllmPoolColBERTRetriever.from_documents(docs, k=3)
    hits = 0
    for q in queries:
        res = retriever.invoke(q["query"])
        assert len(res) == 3 and all(d.id for d in res)
        scores = [d.metadata["score"] for d in res]
        assert scores == sorted(scores, reverse=True)
        hits += any(d.metadata["module"] == q["module"] for d in res)
    assert hits >= 0.7 * len(queries)
    assert len(retriever.invoke("sha256", k=1)) == 1
    assert all(d.metadata["module"] == "csv" for d in retriever.invoke("read", filter={"module": "csv"}))

    retriever.save(tmp_path / "colbert")
    loaded = VllmPoolColBERTRetriever.load(tmp_path / "colbert", k=3)
    assert loaded.llm is retriever.llm
    q = queries[0]["query"]
    assert [d.id for d in loaded.invoke(q)] == [d.id for d in retriever.invoke(q)]
    assert retriever.delete([docs[0].id, "missing"]) == 1


async def test_colbert_retriever_async() -> None:
    retriever = VllmPoolColBERTRetriever.from_texts(["cats purr", "dogs bark", "json parses"], k=1)
    res = await retriever.ainvoke("kitten")
    assert res[0].page_content == "cats purr"
    assert VllmPoolColBERTRetriever().invoke("empty index") == []
    with pytest.raises(TypeError):
        retriever.invoke("x", bogus=1)


# -- packaging ---------------------------------------------------------------------------
def test_missing_framework_names_install_command(monkeypatch) -> None:
    for name in [m for m in sys.modules if m.startswith("vllm_pool.integrations.langchain")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    with pytest.raises(ImportError, match=r'pip install "vllm-pool\[langchain\]"'):
        importlib.import_module("vllm_pool.integrations.langchain")
