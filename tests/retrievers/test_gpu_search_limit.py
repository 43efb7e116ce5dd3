"""FAISS GPU indexes answer at most 2,048 neighbours per query (more raises there): searches
that need more (a large k, many tombstones, a narrow filter) score documents exactly instead.
Exercised on the CPU with a FAISS index that raises like a GPU one past a small limit."""

from __future__ import annotations

import numpy as np
import pytest
from vllm_pool.retrievers import faiss_index
from vllm_pool.retrievers.dense import DenseIndex
from vllm_pool.retrievers.multivector import MultiVectorIndex

LIMIT = 4


class GpuLike:
    """Delegates to a FAISS index; a search for more than ``LIMIT`` neighbours raises."""

    def __init__(self, inner):
        self.inner = inner

    def search(self, x, k):
        if k > LIMIT:
            raise RuntimeError(f"GPU index only supports k <= {LIMIT}")
        return self.inner.search(x, k)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def gpu_like(monkeypatch):
    monkeypatch.setattr(faiss_index, "GPU_MAX_K", LIMIT)
    monkeypatch.setattr(faiss_index, "on_gpu", lambda index: isinstance(index, GpuLike))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_dense_search_past_the_gpu_limit_is_exact(gpu_like):
    rng = np.random.default_rng(0)
    docs, queries = rng.standard_normal((50, 8)), rng.standard_normal((3, 8))
    ids = [f"d{i}" for i in range(50)]
    index = DenseIndex(8)
    index.add(docs, ids=ids, metadatas=[{"even": i % 2 == 0} for i in range(50)])
    index._index = GpuLike(index._index)
    scores = _unit(queries) @ _unit(docs).T
    for k in (3, 10):
        got = [[h.id for h in hits] for hits in index.search(queries, k=k)]
        assert got == [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in scores]
    got = [[h.id for h in hits] for hits in index.search(queries, k=5, filter={"even": True})]
    even = scores[:, ::2]
    assert got == [[ids[2 * j] for j in np.argsort(-row, kind="stable")[:5]] for row in even]


def test_multivector_candidates_past_the_gpu_limit_are_exact(gpu_like):
    """A narrow filter leaves too few candidates among the first neighbours: the wider
    search it needs is past the limit, so the allowed documents are scored exactly."""
    rng = np.random.default_rng(1)
    docs = [rng.standard_normal((int(rng.integers(2, 6)), 8)).astype(np.float32) for _ in range(30)]
    ids = [f"d{i}" for i in range(30)]
    index = MultiVectorIndex(8, index_type="hnsw")
    index.add(docs, ids=ids, metadatas=[{"group": i % 5} for i in range(30)])
    index._index = GpuLike(index._index)
    query = rng.standard_normal((3, 8)).astype(np.float32)
    scores = np.asarray([(_unit(query) @ _unit(d).T).max(axis=1).sum() for d in docs])
    allowed = [j for j in range(30) if j % 5 == 0]
    want = [ids[j] for j in sorted(allowed, key=lambda j: -scores[j])]
    assert [h.id for h in index.search([query], k=6, filter={"group": 0})[0]] == want
