"""Candidate-index behaviour: k >= n, IVF trained from the data, HNSW tombstones, and
compressed token storage scoring a document the same on every search path."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex
from vllm_pool.retrievers.faiss_index import factory_string


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw", "plaid"])
def test_multivector_k_at_or_beyond_n_returns_every_document(rng, make_docs, index_type):
    docs = make_docs(rng, 150, 16, 6, 12)
    kwargs = {"nlist": 32, "nprobe": 1, "candidates_per_token": 4} if index_type == "ivf" else {}
    index = MultiVectorIndex.from_vectors(docs, index_type=index_type, **kwargs)
    q = make_docs(rng, 1, 16)[0]
    for k in (150, 400):
        hits = index.search(q, k=k)[0]
        assert len(hits) == 150 and len({h.id for h in hits}) == 150
    exact = index.search(q, k=150, exhaustive=True)[0]
    if index_type != "plaid":  # the candidate indexes score exactly from the token store
        assert [h.id for h in index.search(q, k=150)[0]] == [h.id for h in exact]


def test_dense_ivf_k_at_or_beyond_n(rng):
    vecs = rng.standard_normal((2000, 8)).astype(np.float32)
    index = DenseIndex.from_vectors(vecs, index_type="ivf", nlist=64, nprobe=1)
    for k in (2000, 2500):
        hits = index.search(vecs[0], k=k)[0]
        assert len(hits) == 2000 and len({h.id for h in hits}) == 2000


def test_ivf_nlist_is_chosen_from_the_data_at_training_time(rng, make_docs):
    index = MultiVectorIndex(8, index_type="ivf")
    index.add(make_docs(rng, 3, 8, 5, 6), ids=["a", "b", "c"])
    assert index._index is None  # too little data to train: exact search meanwhile
    assert index.search(index.get(["b"])[0].vectors, k=1)[0][0].id == "b"
    big = make_docs(rng, 500, 8, 8, 12)
    index.add(big)
    n = index.num_vectors
    nlist = faiss.extract_index_ivf(index._index).nlist  # read now: the index is freed on re-training
    assert nlist == int(factory_string("ivf", 8, n, None, 32)[3:].split(",")[0]) > 1
    index.add(make_docs(rng, 4 * 500, 8, 8, 12), ids=[f"x{i}" for i in range(2000)])
    assert faiss.extract_index_ivf(index._index).nlist > nlist  # re-trained as it grew 4x
    dense = DenseIndex(8, index_type="ivf")
    dense.add(rng.standard_normal((3, 8)))
    assert dense._index is None
    dense.add(rng.standard_normal((5000, 8)))
    assert faiss.extract_index_ivf(dense._index).nlist == min(int(4 * np.sqrt(5003)), 5003 // 39) == 128


def test_hnsw_is_rebuilt_when_tombstones_pass_a_quarter(rng, make_docs):
    docs = make_docs(rng, 200, 8)
    index = MultiVectorIndex.from_vectors(docs, index_type="hnsw")
    index.rebuild_after = 0  # the class waits for at least 10,000 removed vectors
    index.remove([str(i) for i in range(30)])  # 15% of the documents: tombstones kept
    assert index._tombstones > 0
    index.remove([str(i) for i in range(30, 60)])  # 30%: rebuilt
    assert index._tombstones == 0 and index._index.ntotal == index.num_vectors
    assert index.search(docs[100], k=1)[0][0].id == "100"


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("storage", ["fp16", "int8"])
def test_compressed_storage_scores_the_same_on_every_path(rng, make_docs, index_type, storage):
    docs = make_docs(rng, 300, 16)
    metas = [{"all": 1} for _ in docs]
    index = MultiVectorIndex.from_vectors(docs, index_type=index_type, storage=storage, metadatas=metas)
    q = make_docs(rng, 1, 16)[0]
    plain = {h.id: h.score for h in index.search(q, k=20)[0]}
    gathered = {h.id: h.score for h in index.search(q, k=20, filter={"all": 1})[0]}  # exact filter path
    index.config["exact_filter_limit"] = 0
    scanned = {h.id: h.score for h in index.search(q, k=20, filter={"all": 1})[0]}
    exhaustive = {h.id: h.score for h in index.search(q, k=300, exhaustive=True)[0]}
    for found in (plain, gathered, scanned):
        for doc_id, score in found.items():
            assert score == pytest.approx(exhaustive[doc_id], abs=1e-5)


def test_compressed_storage_saves_the_memory_it_claims(rng, make_docs):
    docs = make_docs(rng, 300, 64)
    per_vector = {}
    for index_type in ("flat", "ivf", "hnsw"):
        for storage in ("fp32", "int8"):
            index = MultiVectorIndex.from_vectors(docs, index_type=index_type, storage=storage)
            per_vector[index_type, storage] = index.memory_usage()["bytes_per_vector"]
    assert per_vector["flat", "fp32"] == 4 * 64 and per_vector["flat", "int8"] == 64 + 4
    for index_type in ("ivf", "hnsw"):  # FAISS keeps 1-byte scalar-quantized codes, not fp32
        assert per_vector[index_type, "int8"] < 0.55 * per_vector[index_type, "fp32"]


@pytest.mark.parametrize("storage", ["fp32", "int8"])
def test_device_copy_scan_equals_the_numpy_scan(rng, make_docs, storage):
    """``device="cpu"`` runs the GPU code path (a decoded copy held by torch, scanned there)."""
    docs = make_docs(rng, 120, 16)
    metas = [{"g": i % 2} for i in range(120)]
    on_host = MultiVectorIndex.from_vectors(docs, storage=storage, metadatas=metas)
    held = MultiVectorIndex.from_vectors(docs, storage=storage, metadatas=metas, device="cpu")
    queries = make_docs(rng, 4, 16)
    for flt in (None, {"g": 1}):
        a, b = on_host.search(queries, k=7, filter=flt), held.search(queries, k=7, filter=flt)
        for x, y in zip(a, b, strict=True):
            assert [h.id for h in x] == [h.id for h in y]
            np.testing.assert_allclose([h.score for h in x], [h.score for h in y], rtol=1e-5)
    held.remove([str(i) for i in range(0, 120, 3)])  # the copy keeps dead rows until compaction
    held.add(docs[:40], ids=[f"n{i}" for i in range(40)])  # appended rows are uploaded
    assert held.search(docs[3], k=1)[0][0].id == "n3"
    assert held._store._mirror_n == held._store._n
