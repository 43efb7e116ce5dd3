"""PLAID's search stages against direct (per-document, per-token) computations of their
definitions, and the ``centroid_score_threshold`` setting end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vllm_pool.retrievers import MultiVectorIndex
from vllm_pool.retrievers.plaid_search import (
    active_cells,
    best,
    centroid_scores,
    probe,
    pruned_scores,
    rows_of,
    search_defaults,
)

from .test_plaid import clustered_docs, queries_from


@pytest.fixture(scope="module")
def store_and_queries():
    rng = np.random.default_rng(3)
    docs = clustered_docs(rng, 300)
    index = MultiVectorIndex.from_vectors(docs, index_type="plaid", nbits=2, device="cpu")
    queries = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in queries_from(rng, docs, 6)]
    return index._store, queries


def doc_cells(store, pos):
    """Centroid ids of the tokens of the document at position ``pos`` (the reference way)."""
    starts, lengths, _ = store.segments()
    return store.row_ids(store._codes[starts[pos] : starts[pos] + lengths[pos]])


def test_stages_match_their_definitions(store_and_queries):
    store, queries = store_and_queries
    starts, lengths, _ = store.segments()
    offsets, docs = store.inverted_list()
    centroids = store.codec.centroids.astype(np.float32)
    for q in queries:
        scores = q.astype(np.float32) @ centroids.T  # [Lq, C]
        cs = torch.from_numpy(scores)
        # stage 1: documents with a token in the ncells best cells of some query token
        for ncells in (1, 3):
            top = set(np.argsort(-scores, axis=1)[:, :ncells].ravel().tolist())
            want = [d for d in range(len(starts)) if top & set(doc_cells(store, d).tolist())]
            np.testing.assert_array_equal(probe(cs, offsets, docs, None, 1, ncells), want)
        cand = probe(cs, offsets, docs, None, 1, 2)
        table = np.ascontiguousarray(scores.T)
        # stage 2: max over the document's cells that pass the threshold only
        for threshold in (0.3, 0.6):
            active = active_cells(cs, threshold)
            np.testing.assert_array_equal(active, np.flatnonzero(scores.max(axis=0) >= threshold))
            got = pruned_scores(table, active, offsets, docs, cand)
            for i, d in enumerate(cand):
                cells = [c for c in doc_cells(store, d) if c in set(active.tolist())]
                ref = scores[:, cells].max(axis=1).sum() if cells else -np.inf
                assert got[i] == pytest.approx(ref, abs=1e-5)
        # stage 3: every token replaced by its centroid
        ids = store.row_ids(store._codes[rows_of(starts[cand], lengths[cand])])
        got = centroid_scores(table, ids, lengths[cand])
        ref = [scores[:, doc_cells(store, d)].max(axis=1).sum() for d in cand]
        np.testing.assert_allclose(got, ref, atol=1e-5)
        assert set(best(got, 5).tolist()) == set(np.argsort(-got)[:5].tolist())


def test_filtered_probe_widens_until_enough(store_and_queries):
    store, queries = store_and_queries
    starts, _, _ = store.segments()
    offsets, docs = store.inverted_list()
    centroids = torch.from_numpy(store.codec.centroids.astype(np.float32))
    cs = torch.from_numpy(queries[0].astype(np.float32)) @ centroids.T
    mask = np.zeros(len(starts), bool)
    mask[::7] = True
    cand = probe(cs, offsets, docs, mask, 30, 1)
    assert len(cand) >= 30 and mask[cand].all()


def test_defaults_and_threshold_setting(store_and_queries):
    assert search_defaults(10) == (1, 0.5, 256)
    assert search_defaults(100) == (2, 0.45, 1024)
    assert search_defaults(1000) == (4, 0.4, 4096)
    store, queries = store_and_queries
    starts, lengths, slots = store.segments()
    offsets, docs = store.inverted_list()
    centroids = store.codec.centroids.astype(np.float32)
    for q in queries:
        # every cell passing: stage 2 is the full centroid interaction, so the 10 hits are the
        # 10 best candidates by centroid-only MaxSim, ranked by exact MaxSim on decoded vectors
        got_slots, got_scores = store.search([q], 10, ncells=1, ndocs=40, centroid_score_threshold=-2.0)[0]
        scores = q.astype(np.float32) @ centroids.T
        cand = probe(torch.from_numpy(scores), offsets, docs, None, 10, 1)
        approx = np.array([scores[:, doc_cells(store, d)].max(axis=1).sum() for d in cand])
        top = cand[np.argsort(-approx, kind="stable")[:10]]
        decoded = {d: store.decode_rows(store._codes[starts[d] : starts[d] + lengths[d]], None) for d in top}
        exact = {int(slots[d]): (q @ decoded[d].T).max(axis=1).sum() for d in top}
        assert set(got_slots.tolist()) == set(exact)
        np.testing.assert_allclose(got_scores, [exact[int(s)] for s in got_slots], rtol=1e-5)
        # no cell passing: stage 2 keeps arbitrary candidates, still k hits
        assert len(store.search([q], 10, ndocs=16, centroid_score_threshold=2.0)[0][0]) == 10
    with pytest.raises(ValueError, match="centroid_score_threshold"):
        MultiVectorIndex(32, index_type="plaid", centroid_score_threshold="high")
    index = MultiVectorIndex(32, index_type="plaid", centroid_score_threshold=0.3)
    assert index.config["centroid_score_threshold"] == 0.3


def test_centroids_are_held_in_fp16(store_and_queries):
    store, _ = store_and_queries
    assert store.codec.centroids.dtype == np.float16
    assert store.nbytes()["codec"] == (
        store.codec.centroids.nbytes + store.codec.cutoffs.nbytes + store.codec.weights.nbytes
        + store.codec.lookup.nbytes
    )  # fmt: skip
    assert store.codec.centroids.nbytes == store.codec.num_centroids * store.dim * 2
