"""Token store settings: PQ sizes (checked, codes as wide as FAISS packs them), fp16 overflow
refused by row, and ``candidates_per_token`` checked under its own name."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from vllm_pool.retrievers import MultiVectorIndex
from vllm_pool.retrievers.token_store import PQ_NBITS_MAX, TokenStore, default_pq_m

DIM = 16


def maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).sum())


def random_pq(m: int, nbits: int, rng: np.random.Generator) -> faiss.ProductQuantizer:
    """A FAISS product quantizer with random codebooks (no training: every ``nbits`` is quick)."""
    pq = faiss.ProductQuantizer(DIM, m, nbits)
    faiss.copy_array_to_vector(rng.standard_normal(DIM * 2**nbits).astype(np.float32), pq.centroids)
    return pq


@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("nbits", range(1, PQ_NBITS_MAX + 1))
def test_pq_codes_are_faiss_codes_for_every_nbits(m, nbits):
    rng = np.random.default_rng(nbits)
    pq = random_pq(m, nbits, rng)
    x = rng.standard_normal((12, DIM)).astype(np.float32)
    codes = pq.compute_codes(x)  # [12, ceil(m * nbits / 8)]
    store = TokenStore(DIM, "pq", m, nbits)
    centroids = faiss.vector_to_array(pq.centroids)
    store.load_arrays(
        [0, 1], {"token_codes.npy": codes, "doc_lengths.npy": np.array([5, 7]), "pq_centroids.npy": centroids}
    )
    np.testing.assert_array_equal(store.decode([0, 1])[0], pq.decode(codes))
    y = rng.standard_normal((4, DIM)).astype(np.float32)
    store.add([2], [y])  # encoded by the store's own codec
    np.testing.assert_array_equal(store.gather([2])[0], pq.compute_codes(y))
    np.testing.assert_array_equal(store.decode([2])[0], pq.decode(pq.compute_codes(y)))
    assert store.bytes_per_vector() == pq.code_size
    arrays = store.to_arrays([1, 2])
    np.testing.assert_array_equal(arrays["token_codes.npy"], np.concatenate([codes[5:], pq.compute_codes(y)]))


@pytest.mark.parametrize(("m", "nbits"), [(2, 6), (1, 4), (4, 3), (2, 1), (4, 8)])
def test_pq_index_trains_searches_and_reloads(tmp_path, m, nbits):
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((8, DIM)).astype(np.float32) for _ in range(40)]  # 320 vectors
    index = MultiVectorIndex(DIM, storage="pq", pq_m=m, pq_nbits=nbits)
    ids = index.add(docs)
    assert index.memory_usage()["bytes_per_vector_store"] == faiss.ProductQuantizer(DIM, m, nbits).code_size
    decoded = {r.id: r.vectors for r in index.get(ids)}
    q = rng.standard_normal((3, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    hits = index.search(q, k=len(docs))[0]
    want = {i: maxsim(q, d) for i, d in decoded.items()}  # MaxSim over the stored (decoded) vectors
    assert sorted(h.id for h in hits) == sorted(ids)
    for h in hits:
        assert h.score == pytest.approx(want[h.id], abs=1e-4)
    assert len({round(h.score, 4) for h in hits}) > 1  # codes that tell documents apart
    index.save(tmp_path / "pq")
    loaded = MultiVectorIndex.load(tmp_path / "pq")
    assert (loaded.config["pq_m"], loaded.config["pq_nbits"]) == (m, nbits)
    assert [(h.id, h.score) for h in loaded.search(q, k=5)[0]] == [(h.id, h.score) for h in hits[:5]]


def test_pq_settings_are_checked():
    assert TokenStore(DIM, "pq").pq_m == default_pq_m(DIM)  # None: automatic
    for bad in (0, -4, 3, 32):
        with pytest.raises(
            ValueError, match=rf"pq_m must be None \(automatic\) .*dimension {DIM}, got {bad}"
        ):
            MultiVectorIndex(DIM, storage="pq", pq_m=bad)
    for bad in (0, -1, PQ_NBITS_MAX + 1, 24):
        with pytest.raises(ValueError, match=rf"pq_nbits .* from 1 to {PQ_NBITS_MAX}, got {bad}"):
            MultiVectorIndex(DIM, storage="pq", pq_m=4, pq_nbits=bad)
    for name, bad in (("pq_m", 2.0), ("pq_m", True), ("pq_nbits", 8.0), ("pq_nbits", True)):
        with pytest.raises(TypeError, match=f"{name} must be an int"):
            MultiVectorIndex(DIM, storage="pq", **{name: bad})
    index = MultiVectorIndex(DIM, storage="pq", pq_m=np.int64(4), pq_nbits=np.int64(6))
    assert index.config["pq_m"] == 4 and type(index.config["pq_nbits"]) is int  # JSON-ready


def test_fp16_overflow_is_refused_by_row_and_nothing_is_added():
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(5)]
    index = MultiVectorIndex(8, storage="fp16", normalize=False)
    index.add(docs[:2], ids=["a", "b"])
    before = [(h.id, h.score) for h in index.search(docs[0], k=5)[0]]
    big = [d.copy() for d in docs]
    big[3][1] *= 1e5  # finite as float32, beyond float16's 65504
    with pytest.raises(ValueError, match=r"doc_vectors\[3\]\[1\] contains infinite values as float16.*65504"):
        index.add(big, ids=list("cdefg"))
    assert index.ids() == ["a", "b"]
    assert [(h.id, h.score) for h in index.search(docs[0], k=5)[0]] == before
    edge = np.full((1, 8), np.finfo(np.float16).max, dtype=np.float32)  # the largest float16: kept
    index.add([edge], ids=["edge"])
    np.testing.assert_array_equal(index.get(["edge"])[0].vectors, edge)
    # the same vectors are fine where they fit: fp32 storage, or unit vectors
    for kwargs in ({"storage": "fp32", "normalize": False}, {"storage": "fp16"}):
        ok = MultiVectorIndex(8, **kwargs)
        ok.add(big, ids=list("cdefg"))
        assert all(np.isfinite(h.score) for h in ok.search(big[3][:1] / 1e5, k=5)[0])


def test_candidates_per_token_none_is_the_default_and_others_are_checked():
    rng = np.random.default_rng(0)
    index = MultiVectorIndex(8, index_type="hnsw", candidates_per_token=4)
    index.add([rng.standard_normal((3, 8)) for _ in range(50)])
    q = rng.standard_normal((2, 8))
    default = index.search(q, k=3)
    assert index.search(q, k=3, candidates_per_token=None) == default
    assert index.search(q, k=3, candidates_per_token=np.int64(4)) == default
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"candidates_per_token must be >= 1, got {bad}"):
            index.search(q, k=3, candidates_per_token=bad)
    for bad in (False, 0.0, 2.0):
        with pytest.raises(TypeError, match="candidates_per_token must be an int"):
            index.search(q, k=3, candidates_per_token=bad)
    with pytest.raises(ValueError, match="candidates_per_token must be >= 1, got 0"):
        MultiVectorIndex(8, candidates_per_token=0)
    with pytest.raises(ValueError, match="^k must be >= 1, got 0$"):  # k keeps its own name
        index.search(q, k=0)
    with pytest.raises(TypeError, match="^k must be an int, got float$"):
        index.search(q, k=2.0)
