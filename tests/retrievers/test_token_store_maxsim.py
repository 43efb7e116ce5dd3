"""In-place MaxSim over the fp32 token store equals the plain computation, removals included."""

from __future__ import annotations

import numpy as np
from vllm_pool.retrievers.token_store import TokenStore


def test_maxsim_in_place_matches_loop():
    rng = np.random.default_rng(0)
    store = TokenStore(8, "fp32")
    docs = [rng.standard_normal((int(rng.integers(1, 9)), 8)).astype(np.float32) for _ in range(40)]
    store.add(list(range(40)), docs)
    store.remove([3, 17, 39])  # dead rows stay in place until compaction
    q = rng.standard_normal((5, 8)).astype(np.float32)
    for slots in ([0, 1, 2], [39 - 1, 5, 0, 20], [s for s in range(40) if s not in (3, 17, 39)]):
        got = store.maxsim_in_place(q, slots)
        want = [float((q @ docs[s].T).max(axis=1).sum()) for s in slots]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert TokenStore(8, "fp16").maxsim_in_place(q, [0]) is None


def test_flat_rows_are_the_index_rows_in_place():
    import faiss
    from vllm_pool.retrievers.faiss_index import flat_rows

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((500, 16)).astype(np.float32)
    index = faiss.IndexIDMap(faiss.index_factory(16, "Flat", faiss.METRIC_INNER_PRODUCT))
    index.add_with_ids(xb, np.arange(1000, 1500, dtype=np.int64))
    vectors, ids = flat_rows(index)
    np.testing.assert_array_equal(vectors, xb)
    np.testing.assert_array_equal(ids, np.arange(1000, 1500))
    hnsw = faiss.IndexIDMap(faiss.index_factory(16, "HNSW8,Flat", faiss.METRIC_INNER_PRODUCT))
    hnsw.add_with_ids(xb, np.arange(500, dtype=np.int64))
    assert flat_rows(hnsw) is None  # other index types search as usual


def test_flat_search_equals_exhaustive_after_removals():
    from vllm_pool.retrievers import MultiVectorIndex

    rng = np.random.default_rng(2)
    docs = [rng.standard_normal((int(rng.integers(2, 12)), 16)).astype(np.float32) for _ in range(120)]
    index = MultiVectorIndex.from_vectors(docs, ids=[f"d{i}" for i in range(120)])
    index.remove([f"d{i}" for i in range(0, 120, 7)])
    queries = [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(6)]
    fast = index.search(queries, k=10)
    exact = index.search(queries, k=10, exhaustive=True)
    for a, b in zip(fast, exact):
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)
