"""Tied scores (duplicate chunks) come back in one order on every search path: score
descending, then insertion order. That is FAISS's own order on a flat L2 index (distance
ascending, then position), which these tests use as the reference; FAISS's inner-product
heap keeps an arbitrary subset of the documents tied at its cut-off, so it is not one.

The vectors take values in {0, +-0.5, +-1} (unit norm): every inner product and distance is
exact in float32, so equal scores are bit-equal on every path (FAISS, numpy, torch)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex, faiss_index, maxsim, pad_token_vectors
from vllm_pool.retrievers.candidates import merge_top_k, top_k

TYPES = np.array(
    [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0.5, 0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5, 0.5],
        [-1, 0, 0, 0],
        [0.5, 0.5, -0.5, 0.5],
    ],
    dtype=np.float32,
)
"""Unit vectors whose inner products with each other are exact: many ties, also between
different vectors (``TYPES[0] . TYPES[3] == TYPES[0] . TYPES[4]``)."""


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    vectors = TYPES[rng.integers(0, len(TYPES), size=60)]  # duplicates everywhere
    queries = TYPES[rng.integers(0, len(TYPES), size=24)]  # >= 20 queries: FAISS's BLAS path too
    return vectors, queries


def faiss_l2_order(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    """FAISS's own answer: an ``IndexIDMap`` over ``IndexFlatL2`` (for unit vectors the
    same ranking as inner product)."""
    ref = faiss.IndexIDMap(faiss.IndexFlatL2(vectors.shape[1]))
    ref.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    _, labels = ref.search(queries, min(k, len(vectors)))
    return [[int(j) for j in row] for row in labels]


def ids(results) -> list[list[int]]:
    return [[int(h.id[1:]) for h in hits] for hits in results]


def dense(vectors: np.ndarray, **kwargs) -> DenseIndex:
    index = DenseIndex(vectors.shape[1], **kwargs)
    index.add(vectors, ids=[f"d{i}" for i in range(len(vectors))])
    return index


def test_the_reference_is_faiss_l2_tie_order(data):
    vectors, queries = data
    stable = [list(np.argsort(-row, kind="stable")[:7]) for row in queries @ vectors.T]
    assert faiss_l2_order(vectors, queries, 7) == stable
    assert faiss_l2_order(vectors, queries[:3], 7) == stable[:3]  # FAISS's one-query kernels too


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # flat: FAISS
        {"exact_filter_limit": 0},  # flat, a filter searched through FAISS
        {"index_type": "ivf"},  # under 1,024 vectors: untrained, exact
        {"index_type": "ivf", "nlist": 4, "nprobe": 4},  # trained, every list probed
        {"index_type": "hnsw"},
    ],
    ids=["flat", "flat-faiss-filter", "ivf-untrained", "ivf", "hnsw"],
)
@pytest.mark.parametrize("k", [1, 3, 7, 20, 60, 80])
def test_dense_ties_follow_faiss_with_or_without_a_filter(data, kwargs, k):
    vectors, queries = data
    index = dense(vectors, **kwargs)
    want = faiss_l2_order(vectors, queries, k)
    assert ids(index.search(queries, k=k)) == want
    assert ids(index.search(queries, k=k, filter=lambda m: True)) == want
    assert ids(index.search(queries[:2], k=k)) == want[:2]


def test_dense_ties_after_removals_and_overwrites(data):
    """Removed documents (tombstones in HNSW) and overwritten ones (new slots, at the end)."""
    vectors, queries = data
    for index_type in ("flat", "hnsw"):
        index = dense(vectors, index_type=index_type)
        index.remove([f"d{i}" for i in range(0, 60, 3)])
        index.add(vectors[1:3], ids=["d1", "d2"])  # re-added: now the newest
        order = [i for i in range(60) if i % 3 and i not in (1, 2)] + [1, 2]
        want = [[order[j] for j in row] for row in faiss_l2_order(vectors[order], queries, 9)]
        assert ids(index.search(queries, k=9)) == want
        assert ids(index.search(queries, k=9, filter=lambda m: True)) == want


def test_dense_ties_past_a_gpu_search_limit_are_exact(data, monkeypatch):
    """A FAISS GPU index answers at most GPU_MAX_K neighbours: a tie group longer than
    that cannot be completed through FAISS, so those queries are scored exactly."""
    vectors, queries = data
    index = dense(vectors)
    limit = 8  # FAISS's inner-product heap keeps the wrong tied documents at its 8th
    monkeypatch.setattr(faiss_index, "GPU_MAX_K", limit)
    monkeypatch.setattr(faiss_index, "on_gpu", lambda _: True)
    inner = index._index

    class GpuLike:
        ntotal = inner.ntotal

        def search(self, x, k):
            assert k <= limit
            return inner.search(x, k)

    index._index = GpuLike()
    assert ids(index.search(queries, k=7)) == faiss_l2_order(vectors, queries, 7)


@pytest.mark.parametrize("n,k", [(40, 5), (300, 17), (1000, 10), (8, 8), (5, 9)])
def test_top_k_is_a_stable_sort(n, k):
    rng = np.random.default_rng(n)
    for _ in range(20):
        scores = rng.integers(0, 4, size=n).astype(np.float32)  # many ties
        slots = np.arange(n, dtype=np.int64)
        got_slots, got_scores = top_k(slots, scores, k)
        ref = np.argsort(-scores, kind="stable")[:k]
        assert got_slots.tolist() == ref.tolist()
        assert got_scores.tolist() == scores[ref].tolist()
        shuffled = rng.permutation(n)  # slots in any order: ties by slot, not by position
        ref = np.lexsort((shuffled, -scores))[:k]
        assert top_k(shuffled, scores, k)[0].tolist() == shuffled[ref].tolist()


def test_top_k_example_from_the_report():
    scores = np.zeros(36, dtype=np.float32)
    scores[[0, 8, 35]] = 1
    assert top_k(np.arange(36), scores, 5)[0].tolist() == [0, 8, 35, 1, 2]


def test_merging_blocks_equals_one_top_k():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=500).astype(np.float32)
    slots = rng.permutation(500).astype(np.int64)
    best = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    for start in range(0, 500, 64):
        best = merge_top_k(best, slots[start : start + 64], scores[start : start + 64], 12)
    assert best[0].tolist() == top_k(slots, scores, 12)[0].tolist()


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_multivector_ties_agree_on_every_path(index_type):
    """Duplicate documents: the exhaustive scan, a filter and the FAISS candidates (few per
    query token, so FAISS's cut-off falls inside groups of identical tokens) all give the
    reference MaxSim order, ties by insertion order."""
    rng = np.random.default_rng(11)
    distinct = [TYPES[rng.integers(0, len(TYPES), size=int(rng.integers(2, 4)))] for _ in range(12)]
    docs = [distinct[int(i)] for i in rng.integers(0, 12, size=120)]
    queries = [TYPES[[0, 3]], TYPES[[1]], TYPES[[4, 6, 2]]]
    extra = {"ivf": {"nlist": 4, "nprobe": 4}}.get(index_type, {})
    index = MultiVectorIndex(4, index_type=index_type, candidates_per_token=3, **extra)
    index.add(docs, ids=[f"d{i}" for i in range(len(docs))])
    d_tokens, d_mask = pad_token_vectors(docs)
    q_tokens, q_mask = pad_token_vectors(queries)
    scores = maxsim(q_tokens, d_tokens, q_mask, d_mask).numpy()  # [Q, N]
    for k in (1, 4, 15):
        want = [list(np.argsort(-row, kind="stable")[:k]) for row in scores]
        assert ids(index.search(queries, k=k)) == want
        assert ids(index.search(queries, k=k, exhaustive=True)) == want
        assert ids(index.search(queries, k=k, filter=lambda m: True)) == want
