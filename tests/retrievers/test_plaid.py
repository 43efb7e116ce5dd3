"""The PLAID-style compressed index against exhaustive fp32 MaxSim and a direct computation
of ColBERTv2's residual codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vllm_pool.retrievers import IndexFormatError, MultiVectorIndex, maxsim, pad_token_vectors
from vllm_pool.retrievers.persistence import version_folder
from vllm_pool.retrievers.plaid import position_dtype
from vllm_pool.retrievers.residual_codec import ResidualCodec, least_squares_levels, nearest, num_centroids


def clustered_docs(rng, n_docs, dim=32, n_topics=24, lo=8, hi=24):
    """Documents drawing their tokens from a few topics each (a Gaussian mixture)."""
    centers = rng.standard_normal((n_topics, dim)).astype(np.float32)
    docs = []
    for _ in range(n_docs):
        topics = centers[rng.integers(0, n_topics, 3)]
        n = int(rng.integers(lo, hi))
        docs.append((topics[rng.integers(0, 3, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32))
    return docs


def queries_from(rng, docs, n, lq=8):
    """Noisy subsets of the tokens of random documents."""
    out = []
    for i in rng.integers(0, len(docs), n):
        d = docs[i]
        noise = 0.3 * rng.standard_normal((lq, d.shape[1]))
        out.append((d[rng.integers(0, len(d), lq)] + noise).astype(np.float32))
    return out


def exhaustive(docs, queries):
    """``[Q, N]`` fp32 MaxSim of unit-normalized queries and documents (the reference)."""
    unit = [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]
    q_unit = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in queries]
    t, m = pad_token_vectors(unit)
    qt, qm = pad_token_vectors(q_unit)
    return maxsim(qt, t, qm, m).numpy()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    docs = clustered_docs(rng, 400)
    queries = queries_from(rng, docs, 20)
    return docs, queries, exhaustive(docs, queries)


def test_codec_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for nbits in (1, 2, 4):
        codec = ResidualCodec.train(x, nbits)
        assert codec.num_centroids == num_centroids(3000) == min(512, 3000 // 8)  # 2**floor(log2(16 sqrt n))
        ids, packed = codec.encode(x)
        assert packed.shape == (3000, 16 * nbits // 8) and packed.dtype == np.uint8
        # reference: nearest centroid by inner product, bucket = number of cutoffs <= residual
        ref_ids = np.argmax(x @ codec.centroids.T, axis=1)
        np.testing.assert_array_equal(ids, ref_ids)
        residual = x - codec.centroids[ref_ids]
        buckets = (residual[:, :, None] >= codec.cutoffs[None, None, :]).sum(-1)
        ref = codec.centroids[ref_ids] + codec.weights[buckets]
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        np.testing.assert_allclose(codec.decode(ids, packed), ref, atol=1e-6)
        # least-squares buckets (x is small: its residuals trained them): each value is the
        # mean of the residuals in its bucket, each cutoff the midpoint of two values
        means = [residual[buckets == b].mean() for b in range(2**nbits)]
        np.testing.assert_allclose(codec.weights, means, atol=1e-4)
        np.testing.assert_allclose(codec.cutoffs, (codec.weights[1:] + codec.weights[:-1]) / 2, atol=1e-6)
    err = {}
    for nbits in (1, 2, 4):
        codec = ResidualCodec.train(x, nbits)
        err[nbits] = float(np.mean(np.sum(codec.decode(*codec.encode(x)) * x, axis=1)))
    assert err[1] < err[2] < err[4] and err[4] > 0.98  # more bits, closer vectors (mean cosine)


def optimal_mse(v, levels):
    """The least squared error of any ``levels`` runs of the sorted ``v``, each at its mean
    (exact optimal 1-D k-means by dynamic programming over the split points)."""
    n = len(v)
    s1, s2 = np.concatenate([[0], np.cumsum(v)]), np.concatenate([[0], np.cumsum(v**2)])
    i, j = np.triu_indices(n + 1, 1)  # run v[i:j]
    cost = np.full((n + 1, n + 1), np.inf)
    cost[i, j] = s2[j] - s2[i] - (s1[j] - s1[i]) ** 2 / (j - i)
    best = cost[0].copy()  # best[j]: one run covering v[:j]
    for _ in range(levels - 1):
        best = np.min(best[:, None] + cost, axis=0)
    return best[n] / n


@pytest.mark.parametrize("levels", [2, 4, 16])
def test_least_squares_levels_against_the_optimum(levels):
    rng = np.random.default_rng(levels)
    v = np.sort(rng.standard_normal(2000))
    cutoffs, weights = least_squares_levels(v, levels)

    def mse(cut, w):
        return float(np.mean((v - np.asarray(w)[np.searchsorted(cut, v, side="right")]) ** 2))

    if levels <= 4:  # Lloyd's fixed point is the optimum here; with 16 levels on 2,000 samples
        # it can stop in a local one (on the 65,536 x dim residuals of training it does not matter)
        assert mse(cutoffs, weights) == pytest.approx(optimal_mse(v, levels), rel=1e-6)
    # colbert-ai's quantile scheme (the starting point) has a larger error
    q_cut = np.quantile(v, np.arange(1, levels) / levels)
    q_w = np.quantile(v, (np.arange(levels) + 0.5) / levels)
    assert mse(cutoffs, weights) < mse(q_cut, q_w)
    assert np.all(np.diff(weights) > 0) and np.all(np.diff(cutoffs) > 0)
    assert cutoffs.dtype == weights.dtype == np.float32


def test_least_squares_levels_of_constant_values():
    cutoffs, weights = least_squares_levels(np.zeros(100), 4)
    assert np.all(np.isfinite(cutoffs)) and np.all(weights == 0)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_recall_against_exhaustive_maxsim(data, nbits):
    docs, queries, scores = data
    index = MultiVectorIndex.from_vectors(docs, index_type="plaid", nbits=nbits, device="cpu", ncells=4)
    found = index.search(queries, k=10)
    truth = [set(np.argsort(-row)[:10].tolist()) for row in scores]

    def recall(found):
        return np.mean([len({int(h.id) for h in f} & t) / 10 for f, t in zip(found, truth, strict=True)])

    assert recall(found) >= {1: 0.7, 2: 0.85, 4: 0.93}[nbits]
    index.config["ncells"] = None  # the default: one cell per query token (tiny, diffuse corpus)
    assert recall(index.search(queries, k=10)) >= 0.6
    # every returned score is exact MaxSim against the decompressed token vectors
    for q, hits in zip(queries, found, strict=True):
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        for h in hits[:3]:
            dec = index.get([h.id])[0].vectors
            assert h.score == pytest.approx(float((qn @ dec.T).max(axis=1).sum()), abs=1e-4)


def test_probing_everything_is_exhaustive_on_the_compressed_vectors(data):
    docs, queries, _ = data
    index = MultiVectorIndex.from_vectors(docs, index_type="plaid", nbits=2, ncells=10**6, ndocs=10**6)
    decoded = [r.vectors for r in index.get([str(i) for i in range(len(docs))])]
    ref = exhaustive(decoded, queries)
    for row, hits in zip(ref, index.search(queries, k=10), strict=True):
        assert [int(h.id) for h in hits] == np.argsort(-row, kind="stable")[:10].tolist()
        np.testing.assert_allclose([h.score for h in hits], np.sort(row)[::-1][:10], rtol=1e-5)


def test_k_filters_delete_and_compaction(data):
    docs, queries, _ = data
    metas = [{"group": i % 4} for i in range(len(docs))]
    index = MultiVectorIndex.from_vectors(docs, index_type="plaid", metadatas=metas)
    assert len(index.search(queries[0], k=len(docs) + 50)[0]) == len(docs)  # k >= n: all of them
    hits = index.search(queries[:3], k=15, filter={"group": 1})
    assert all(len(h) == 15 and all(x.metadata["group"] == 1 for x in h) for h in hits)
    index.config["exact_filter_limit"] = 0  # the PLAID path with a filter (cells widened as needed)
    hits = index.search(queries[:3], k=100, filter={"group": 2})
    assert all(len(h) == 100 and all(x.metadata["group"] == 2 for x in h) for h in hits)
    before = index._store.num_vectors
    removed = [str(i) for i in range(0, len(docs), 2)]
    assert index.remove(removed) == len(removed)
    left = {h.id for h in index.search(queries[0], k=len(docs))[0]}
    assert left == {str(i) for i in range(1, len(docs), 2)}
    index.add(docs[:10], ids=[f"new{i}" for i in range(10)])  # grows past half dead: compaction
    assert index._store._dead == 0 or index._store.num_vectors < before
    assert index.search(docs[4], k=1)[0][0].id == "new4"


def test_incremental_add_retrains_as_the_index_grows(data):
    docs, queries, scores = data
    index = MultiVectorIndex(32, index_type="plaid", nbits=2)
    index.add(docs[:20], ids=[str(i) for i in range(20)])
    first = index._store.trained_on
    for start in range(20, len(docs), 60):
        index.add(docs[start : start + 60], ids=[str(i) for i in range(start, min(start + 60, len(docs)))])
    assert index._store.trained_on > 4 * first and len(index) == len(docs)
    assert index._store.codec.num_centroids == num_centroids(index._store.trained_on)
    found = index.search(queries, k=10)
    truth = [set(np.argsort(-row)[:10].tolist()) for row in scores]
    recall = np.mean([len({int(h.id) for h in f} & t) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.8


def test_persistence_round_trip_and_corruption(tmp_path, data):
    docs, queries, _ = data
    metas = [{"i": i} for i in range(400)]
    index = MultiVectorIndex.from_vectors(docs, index_type="plaid", nbits=1, metadatas=metas)
    index.remove(["5"])
    index.save(tmp_path / "p")
    loaded = MultiVectorIndex.load(tmp_path / "p")
    assert loaded.config["index_type"] == "plaid" and loaded.config["nbits"] == 1
    a, b = index.search(queries, k=10), loaded.search(queries, k=10)

    def rounded(results):
        return [[(h.id, round(h.score, 5)) for h in r] for r in results]

    assert rounded(a) == rounded(b)
    np.save(version_folder(tmp_path / "p") / "plaid_centroids.npy", np.zeros((3, 32), np.float32))
    with pytest.raises(IndexFormatError, match=r"plaid_centroids\.npy"):
        MultiVectorIndex.load(tmp_path / "p")


def test_memory_counts_everything_per_vector(data):
    docs, _, _ = data
    index = MultiVectorIndex.from_vectors(docs, index_type="plaid", nbits=2)
    store = index._store
    parts = store.nbytes()
    n = store.num_vectors
    assert parts["codes"] == n * (2 + 32 * 2 // 8)  # uint16 centroid id + 2 bits x 32 dimensions
    assert parts["codec"] >= store.codec.centroids.nbytes > 0
    offsets, ivf_docs = store.inverted_list()
    assert parts["inverted_list"] == offsets.nbytes + ivf_docs.nbytes
    usage = index.memory_usage()
    assert usage["bytes_per_vector"] == pytest.approx(sum(parts.values()) / n)
    assert usage["candidate_index_bytes"] == 0


def test_compact_inverted_list_matches_a_direct_computation(data):
    docs, _, _ = data
    store = MultiVectorIndex.from_vectors(docs, index_type="plaid", nbits=2)._store
    offsets, ivf_docs = store.inverted_list()
    assert ivf_docs.dtype == np.uint16  # 400 documents: 2 bytes per (cell, document) pair
    starts, lengths, _ = store.segments()
    ref = {}  # cell -> sorted positions of the documents with a token in it
    for pos in range(len(starts)):
        for cell in set(store.row_ids(store._codes[starts[pos] : starts[pos] + lengths[pos]]).tolist()):
            ref.setdefault(cell, []).append(pos)
    for cell in range(store.codec.num_centroids):
        assert ivf_docs[offsets[cell] : offsets[cell + 1]].tolist() == ref.get(cell, [])
    assert position_dtype(1 << 16) == np.uint16 and position_dtype((1 << 16) + 1) == np.int32
    assert np.iinfo(np.uint16).max == (1 << 16) - 1  # positions 0 .. 65,535


def test_bad_input(data):
    docs, queries, _ = data
    with pytest.raises(ValueError, match="nbits"):
        MultiVectorIndex(32, index_type="plaid", nbits=3)
    with pytest.raises(ValueError, match="dimension 12"):
        MultiVectorIndex(12, index_type="plaid", nbits=1)
    with pytest.raises(ValueError, match="storage"):
        MultiVectorIndex(32, index_type="plaid", storage="int8")
    with pytest.raises(ValueError, match="ndocs"):
        MultiVectorIndex(32, index_type="plaid", ndocs=0)
    index = MultiVectorIndex.from_vectors(docs[:50], index_type="plaid")
    with pytest.raises(ValueError, match=r"k must be >= 1"):
        index.search(queries[0], k=0)
    with pytest.raises(ValueError, match=r"doc_vectors\[1\] has dimension 16, index dimension is 32"):
        index.add([docs[0], np.ones((3, 16), np.float32)], ids=["x", "y"])
    with pytest.raises(ValueError, match=r"doc_vectors\[0\] has no token vectors"):
        index.add([np.zeros((0, 32), np.float32)], ids=["z"])
    assert len(index) == 50 and "x" not in index  # nothing indexed was lost or half-added
    assert index.search(docs[7], k=1)[0][0].id == "7"


def test_failed_add_and_foreign_folders_lose_nothing(tmp_path, data, monkeypatch):
    docs, _, _ = data
    index = MultiVectorIndex.from_vectors(docs[:60], index_type="plaid")
    store = index._store

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "add", broken)
    with pytest.raises(RuntimeError):
        index.add([docs[70]], ids=["3"])  # would overwrite "3"
    monkeypatch.undo()
    assert len(index) == 60 and index.search(docs[3], k=1)[0][0].id == "3"
    index.save(tmp_path / "p")
    flat = MultiVectorIndex.from_vectors(docs[:5])
    flat.save(tmp_path / "flat")
    live, flat_live = version_folder(tmp_path / "p"), version_folder(tmp_path / "flat")
    (live / "token_codes.npy").write_bytes((flat_live / "token_codes.npy").read_bytes())
    m = json.loads((live / "manifest.json").read_text())
    m["files"]["token_codes.npy"] = {"size": (live / "token_codes.npy").stat().st_size}
    (live / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match=r"token_codes\.npy"):  # fp32 rows in a PLAID folder
        MultiVectorIndex.load(tmp_path / "p")


def test_nearest_centroid_in_any_block_size():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((1000, 16)).astype(np.float32))
    c = rng.standard_normal((70, 16)).astype(np.float32)
    centroids = torch.from_numpy(c / np.linalg.norm(c, axis=1, keepdims=True))
    ref = np.argmax(x.numpy() @ centroids.numpy().T, axis=1)
    for block in (None, 1, 7, 64, 5000):
        np.testing.assert_array_equal(nearest(x, centroids, block).numpy(), ref)
