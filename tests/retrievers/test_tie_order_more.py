"""Tied scores on the paths :mod:`test_tie_order` does not cover: quantized dense search
(int8 / binary codes), PLAID's pruning stages and a sharded index. The order is the one of
every path: score descending, then insertion order (shard after shard for shards).

As there, vectors take values in {0, +-0.5, +-1}, so scores are exact and ties bit-equal."""

from __future__ import annotations

import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex, ShardedIndex, quantization
from vllm_pool.retrievers.plaid_search import best

from .test_tie_order import TYPES, dense, ids

QUANTIZED = [
    {"storage": "int8"},
    {"storage": "int8", "rescore": "float"},
    {"storage": "binary"},
    {"storage": "binary", "rescore": "float"},
]
QUANTIZED_IDS = ["int8", "int8-float", "binary", "binary-float"]


@pytest.fixture
def data():
    """As :mod:`test_tie_order`'s: 60 vectors of 7 unit types, 24 queries."""
    rng = np.random.default_rng(7)
    return TYPES[rng.integers(0, len(TYPES), size=60)], TYPES[rng.integers(0, len(TYPES), size=24)]


def hamming(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``[Q, N]`` Hamming distances of the sign bits (``x > 0``), the reference way."""
    return ((queries[:, None, :] > 0) != (vectors[None, :, :] > 0)).sum(axis=2)


@pytest.mark.parametrize("kwargs", QUANTIZED, ids=QUANTIZED_IDS)
def test_quantized_duplicates_come_in_insertion_order(kwargs):
    """1,000 copies of one vector: the first ones, as the float index gives them."""
    vectors = np.vstack([np.repeat(TYPES[:1], 1000, axis=0), TYPES[1:]])
    index = dense(vectors, **kwargs)
    reference = dense(vectors)  # fp32, flat: FAISS, ties by insertion order
    for k in (1, 5, 30):
        want = ids(reference.search(TYPES[:1], k=k))
        assert want == [list(range(k))]
        assert ids(index.search(TYPES[:1], k=k)) == want
        assert ids(index.search(TYPES[:1], k=k, filter=lambda m: True)) == want
    index.remove(["d0", "d2"])  # garbage rows: the codes are gathered in slot order
    reference.remove(["d0", "d2"])
    assert ids(index.search(TYPES[:1], k=5)) == ids(reference.search(TYPES[:1], k=5)) == [[1, 3, 4, 5, 6]]


@pytest.mark.parametrize("multiplier", [1, 2, 100])
@pytest.mark.parametrize("kwargs", QUANTIZED, ids=QUANTIZED_IDS)
def test_quantized_ties_by_insertion_order_with_or_without_a_filter(data, kwargs, multiplier):
    vectors, queries = data
    index = dense(vectors, rescore_multiplier=multiplier, **kwargs)
    for k in (1, 3, 7, 20):
        found = index.search(queries, k=k)
        assert ids(index.search(queries, k=k, filter=lambda m: True)) == ids(found)
        assert ids(index.search(queries[:2], k=k)) == ids(found)[:2]
        for hits in found:  # equal scores: ids ascending
            assert len(hits) == k
            keys = [(-h.score, int(h.id[1:])) for h in hits]
            assert keys == sorted(keys)


def binary_reference(vectors: np.ndarray, queries: np.ndarray, k: int, cut: int, rescore: str) -> list:
    """Positions of the ``k`` best: the ``cut`` smallest Hamming distances (ties at the cut
    by position), ranked by the rescored score (ties by position). Binary scores are exact
    here: the unit sign vectors of dimension 4 have entries +-0.5."""
    signs = np.where(vectors > 0, 0.5, -0.5).astype(np.float32)  # (2 bits - 1) / sqrt(4)
    exact = queries @ (vectors if rescore == "float" else signs).T  # [Q, N]
    dist = hamming(vectors, queries)
    want = []
    for qi in range(len(queries)):
        cand = np.sort(np.argsort(dist[qi], kind="stable")[:cut])
        want.append(cand[np.argsort(-exact[qi, cand], kind="stable")][:k].tolist())
    return want


@pytest.mark.parametrize("multiplier", [1, 2, 100])
@pytest.mark.parametrize("rescore", ["codes", "float"])
def test_binary_search_against_a_numpy_reference(data, rescore, multiplier):
    vectors, queries = data
    order = [*range(1, len(vectors)), 0]  # d0 overwritten: the newest, its row gathered last
    for k in (1, 3, 7):
        index = dense(vectors, storage="binary", rescore=rescore, rescore_multiplier=multiplier)
        want = binary_reference(vectors, queries, k, k * multiplier, rescore)
        assert ids(index.search(queries, k=k)) == want
        assert ids(index.search(queries, k=k, filter=lambda m: True)) == want
        index.add(vectors[:1], ids=["d0"])
        want = binary_reference(vectors[order], queries, k, k * multiplier, rescore)
        assert ids(index.search(queries, k=k)) == [[order[j] for j in row] for row in want]


@pytest.mark.parametrize("copies", [1, 8])
def test_binary_candidates_cut_ties_by_slot_whatever_the_row_order(data, copies):
    """With 8 copies, tie groups run past the first FAISS search (twice k, plus 16): wider ones."""
    vectors, queries = np.tile(data[0], (copies, 1)), data[1]
    codes = quantization.encode(vectors, "binary", None)
    dist = hamming(vectors, queries)
    slots = np.random.default_rng(0).permutation(len(vectors))  # rows not in slot order
    for k in (1, 2, 5, 17, 60):
        for order in (None, slots):
            found = quantization.candidates(queries, codes, "binary", None, k, order)
            tie = np.arange(len(vectors)) if order is None else order
            for qi, rows in enumerate(found):
                assert rows.tolist() == np.lexsort((tie, dist[qi]))[:k].tolist()


def plaid_data() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Documents of 2-4 token types with entries in {0, +-0.5} (dimension 8): each type is
    a centroid of its own, so the PLAID vectors decode exactly and duplicates tie exactly."""
    rng = np.random.default_rng(1)
    types = np.zeros((12, 8), dtype=np.float32)
    for t in types:
        t[rng.choice(8, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    distinct = [types[rng.integers(0, 12, size=int(rng.integers(2, 5)))] for _ in range(40)]
    return [distinct[int(i)] for i in rng.integers(0, 40, size=400)], distinct[:10]


def test_plaid_prunes_tied_candidates_by_insertion_order():
    """``ndocs=8`` keeps 8 candidates after the pruned stage and ``max(k, 2)`` after the full
    centroid stage: both cut inside groups of duplicates. The documents that go on are the
    first of each group, so the result is the exhaustive scan's (ties by insertion order)."""
    docs, queries = plaid_data()
    index = MultiVectorIndex.from_vectors(
        docs, ids=[f"d{i}" for i in range(len(docs))], index_type="plaid", nbits=2, device="cpu", ndocs=8
    )
    decoded = np.concatenate([r.vectors for r in index.get([f"d{i}" for i in range(len(docs))])])
    assert set(np.unique(decoded).tolist()) <= {-0.5, 0.0, 0.5}  # the premise: exact scores
    index.config["exact_filter_limit"] = 0  # a filter goes through PLAID too
    for k in (1, 3, 5, 9):
        want = ids(index.search(queries, k=k, exhaustive=True))
        assert ids(index.search(queries, k=k)) == want
        assert ids(index.search(queries, k=k, filter=lambda m: True)) == want


@pytest.mark.parametrize("n,k", [(40, 5), (300, 17), (8, 3)])
def test_plaid_best_keeps_the_first_of_tied_candidates(n, k):
    rng = np.random.default_rng(n)
    for _ in range(20):
        scores = rng.integers(0, 4, size=n).astype(np.float32)  # many ties
        scores[rng.integers(0, n, size=n // 4)] = -np.inf  # no passing cell (pruned stage)
        assert best(scores, k).tolist() == sorted(np.argsort(-scores, kind="stable")[:k].tolist())


@pytest.mark.parametrize("kind", ["dense", "multivector"])
def test_sharded_ties_in_shard_order_then_each_shards_order(data, kind):
    """Searching shards equals searching one index holding them shard after shard: ids whose
    alphabetical order is neither the shard order nor the order within a shard."""
    vectors, queries = data
    names = [f"{'zyx'[i % 3]}{i}" for i in range(len(vectors))]  # z0, y1, x2, z3, ...
    parts = [range(0, 20), range(20, 45), range(45, 60)]
    if kind == "dense":
        shards = [DenseIndex(4) for _ in parts]
        whole, docs, qs = DenseIndex(4), vectors, queries
    else:
        shards = [MultiVectorIndex(4) for _ in parts]
        whole, docs, qs = MultiVectorIndex(4), [v[None, :] for v in vectors], [q[None, :] for q in queries]
    for shard, part in zip(shards, parts, strict=True):
        shard.add([docs[i] for i in part], ids=[names[i] for i in part])
    whole.add(list(docs), ids=names)
    sharded = ShardedIndex(shards)
    for k in (1, 4, 13, 60):
        want = [[h.id for h in hits] for hits in whole.search(qs, k=k)]
        assert [[h.id for h in hits] for hits in sharded.search(qs, k=k)] == want
        assert [[h.id for h in hits] for hits in sharded.search(qs, k=k, filter=lambda m: True)] == want
