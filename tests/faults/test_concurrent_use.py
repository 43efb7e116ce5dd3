"""Concurrent add / delete / search / MMR / save / load on every index type and the vector
store: no exception in any thread, and every loaded snapshot consistent."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex

DIM = 8


def vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def tokens(i: int) -> np.ndarray:
    x = np.random.default_rng(50_000 + i).standard_normal((2 + i % 3, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_threads(workers: list[Callable[[int], None]], rounds: int) -> None:
    """Run each worker ``rounds`` times in its own thread; re-raise the first failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def loop(work: Callable[[int], None]) -> None:
        start.wait()
        try:
            for r in range(rounds):
                work(r)
        except BaseException as exc:  # noqa: BLE001  (collected and re-raised below)
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def check_snapshot(index, kind: str) -> None:
    """Every document holds the vectors of its own number (no id-to-vector mix-up)."""
    ids = [f"k{i}" for i in range(400)]
    for r in index.get(ids):
        i = int(r.id[1:])
        expected = vector(i)[None, :] if kind == "dense" else tokens(i)
        np.testing.assert_allclose(np.reshape(r.vectors, expected.shape), expected, atol=2e-2)
        assert r.metadata == {"i": i}


INDEXES = [
    ("dense", {"index_type": "flat"}),
    ("dense", {"index_type": "hnsw"}),
    ("dense", {"index_type": "ivf", "nlist": 4}),
    ("multivector", {"index_type": "flat"}),
    ("multivector", {"index_type": "hnsw", "storage": "int8"}),
    ("multivector", {"index_type": "ivf", "nlist": 4, "storage": "fp16"}),
]


@pytest.mark.parametrize(("kind", "options"), INDEXES)
def test_concurrent_writes_searches_saves_and_loads(tmp_path, kind, options):
    cls = DenseIndex if kind == "dense" else MultiVectorIndex
    index = cls(DIM, **options)

    def add(ids: list[int]) -> None:
        metas = [{"i": i} for i in ids]
        if kind == "dense":
            index.add(np.stack([vector(i) for i in ids]), [f"k{i}" for i in ids], metas)
        else:
            index.add([tokens(i) for i in ids], [f"k{i}" for i in ids], metas)

    add(list(range(40)))  # enough to train IVF
    path = tmp_path / "idx"
    index.save(path)
    rng = np.random.default_rng(0)
    query = np.stack([vector(1000 + i) for i in range(2)]) if kind == "dense" else [tokens(7)]

    def writer(r: int) -> None:
        add([40 + (r * 3 + j) % 200 for j in range(3)])  # new ids and upserts

    def deleter(r: int) -> None:
        index.remove([f"k{int(i)}" for i in rng.integers(0, 240, size=3)])

    def searcher(r: int) -> None:
        for hits in index.search(query, k=5, filter=None if r % 2 else {"i": r % 40}):
            assert all(h.metadata == {"i": int(h.id[1:])} for h in hits)

    def saver(r: int) -> None:
        index.save(path)

    def loader(r: int) -> None:
        check_snapshot(cls.load(path), kind)

    run_threads([writer, deleter, searcher, searcher, saver, loader], rounds=12)
    index.save(path)
    loaded = cls.load(path)
    assert sorted(r.id for r in loaded.get([f"k{i}" for i in range(400)])) == sorted(
        r.id for r in index.get([f"k{i}" for i in range(400)])
    )
    check_snapshot(loaded, kind)


def test_vector_store_mmr_with_concurrent_deletes():
    """Issue 15, item 5: MMR raised KeyError when a delete ran between its search and get."""
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from vllm_pool.integrations.langchain import VllmPoolVectorStore

    store = VllmPoolVectorStore(DeterministicFakeEmbedding(size=DIM))
    texts = [f"text {i}" for i in range(60)]

    def refill(r: int) -> None:
        store.add_texts(texts, ids=[f"t{i}" for i in range(60)], metadatas=[{"n": i} for i in range(60)])

    def delete_some(r: int) -> None:
        store.delete([f"t{(r * 7 + j) % 60}" for j in range(20)])

    def delete_all(r: int) -> None:
        if r % 3 == 0:
            store.delete(None)

    def mmr(r: int) -> None:
        docs = store.max_marginal_relevance_search("text 3", k=4, fetch_k=30)
        assert len({d.id for d in docs}) == len(docs) <= 4
        assert all(d.page_content == f"text {d.metadata['n']}" for d in docs)

    refill(0)
    run_threads([refill, delete_some, delete_all, mmr, mmr, mmr], rounds=40)
    refill(0)
    assert len(store.max_marginal_relevance_search("text 3", k=4, fetch_k=30)) == 4
