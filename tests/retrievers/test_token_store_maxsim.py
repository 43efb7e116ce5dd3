"""The token store is scored through the one MaxSim kernel, in blocks, with the same result
as the plain computation: removals, filters and every storage codec included."""

from __future__ import annotations

import numpy as np
import pytest
import vllm_pool.retrievers.candidates as candidates
from vllm_pool.retrievers.candidates import maxsim_slots, scan_store
from vllm_pool.retrievers.token_store import TokenStore


def loop_scores(q, docs):
    return np.array([float((q @ d.T).max(axis=1).sum()) for d in docs])


@pytest.fixture
def store_and_docs():
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(rng.integers(1, 9)), 8)).astype(np.float32) for _ in range(40)]
    store = TokenStore(8, "fp32")
    store.add(list(range(40)), docs)
    store.remove([3, 17, 39])  # dead rows stay in place until compaction
    return store, docs, rng


@pytest.mark.parametrize("block", [1, 7, 1 << 16])
def test_scan_store_matches_loop_in_any_block_size(store_and_docs, monkeypatch, block):
    store, docs, rng = store_and_docs
    monkeypatch.setattr(candidates, "BLOCK_TOKENS", block)
    live = [s for s in range(40) if s not in (3, 17, 39)]
    qs = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 2)]
    for q, (slots, scores) in zip(qs, scan_store(store, qs, k=len(live) + 5), strict=True):
        want = loop_scores(q, [docs[s] for s in live])
        assert sorted(slots.tolist()) == live  # k beyond the documents: every live one, once
        np.testing.assert_allclose(scores, np.sort(want)[::-1], rtol=1e-5, atol=1e-5)
        top_slots, _ = scan_store(store, [q], k=4)[0]
        assert top_slots.tolist() == [live[i] for i in np.argsort(-want, kind="stable")[:4]]
    allowed = np.array([0, 5, 17, 20])  # 17 was removed: never returned
    slots, scores = scan_store(store, qs[:1], k=10, allowed=allowed)[0]
    assert sorted(slots.tolist()) == [0, 5, 20]


@pytest.mark.parametrize("block", [1, 1 << 16])
def test_maxsim_slots_matches_loop(store_and_docs, monkeypatch, block):
    store, docs, rng = store_and_docs
    monkeypatch.setattr(candidates, "BLOCK_TOKENS", block)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    for slots in ([0, 1, 2], [38, 5, 0, 20], [s for s in range(40) if s not in (3, 17, 39)]):
        got = maxsim_slots(store, q, np.asarray(slots))
        np.testing.assert_allclose(got, loop_scores(q, [docs[s] for s in slots]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("storage", ["fp16", "int8"])
def test_compressed_store_scores_the_decoded_vectors(store_and_docs, storage):
    _, docs, rng = store_and_docs
    store = TokenStore(8, storage)
    store.add(list(range(40)), docs)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    decoded = [store.decode([s])[0] for s in range(40)]
    slots, scores = scan_store(store, [q], k=40)[0]
    np.testing.assert_allclose(scores, loop_scores(q, [decoded[s] for s in slots]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maxsim_slots(store, q, slots), scores, rtol=1e-6, atol=1e-6)
