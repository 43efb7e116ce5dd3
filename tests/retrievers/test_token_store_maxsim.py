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


def test_flat_topk_labels_match_faiss_search():
    import faiss
    from vllm_pool.retrievers.faiss_index import flat_topk_labels

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((500, 16)).astype(np.float32)
    index = faiss.IndexIDMap(faiss.index_factory(16, "Flat", faiss.METRIC_INNER_PRODUCT))
    index.add_with_ids(xb, np.arange(1000, 1500, dtype=np.int64))
    q = rng.standard_normal((7, 16)).astype(np.float32)
    _, want = index.search(q, 50)
    np.testing.assert_array_equal(flat_topk_labels(index, q, 50), want)
    hnsw = faiss.IndexIDMap(faiss.index_factory(16, "HNSW8,Flat", faiss.METRIC_INNER_PRODUCT))
    assert flat_topk_labels(hnsw, q, 5) is None  # other index types search as usual
