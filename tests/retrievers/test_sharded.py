"""Shards merged into one index, and shards searched together (`retrievers.sharded`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vllm_pool.retrievers import (
    DenseIndex,
    IndexFormatError,
    MultiVectorIndex,
    ShardedIndex,
    load_index,
    merge_indexes,
)
from vllm_pool.retrievers.index_folder import version_folder

RNG = np.random.default_rng(7)
DIM = 16


def _dense_parts(n: int = 60, parts: int = 3):
    vecs = RNG.normal(size=(n, DIM)).astype(np.float32)
    ids = [f"d{i:03d}" for i in range(n)]
    metas = [{"group": i % 4} for i in range(n)]
    bounds = np.linspace(0, n, parts + 1).astype(int)
    shards = [DenseIndex.from_vectors(vecs[a:b], ids[a:b], metas[a:b]) for a, b in zip(bounds, bounds[1:])]
    return vecs, ids, metas, shards


def _hits(results):
    return [[(h.id, round(h.score, 5)) for h in hits] for hits in results]


def test_merged_dense_equals_one_built_directly():
    vecs, ids, metas, shards = _dense_parts()
    whole = DenseIndex.from_vectors(vecs, ids, metas)
    merged = merge_indexes(list(reversed(shards)))
    assert merged.ids() == sorted(ids)  # id order, whatever the shard order
    q = RNG.normal(size=(5, DIM)).astype(np.float32)
    assert _hits(merged.search(q, k=7)) == _hits(whole.search(q, k=7))
    flt = {"group": 2}
    assert _hits(merged.search(q, k=5, filter=flt)) == _hits(whole.search(q, k=5, filter=flt))
    assert merged.get(["d010"])[0].metadata == {"group": 2}
    hnsw = merge_indexes(shards, index_type="hnsw")
    assert hnsw.config["index_type"] == "hnsw" and len(hnsw) == len(ids)


def test_sharded_search_equals_merged_and_round_trips(tmp_path):
    vecs, ids, metas, shards = _dense_parts()
    sharded = ShardedIndex(shards)
    whole = DenseIndex.from_vectors(vecs, ids, metas)
    q = RNG.normal(size=(4, DIM)).astype(np.float32)
    assert _hits(sharded.search(q, k=6)) == _hits(whole.search(q, k=6))
    assert len(sharded) == 60 and "d059" in sharded and "x" not in sharded
    assert [r.id for r in sharded.get(["d059", "x", "d000"])] == ["d059", "d000"]
    sharded.save(tmp_path / "sh")
    loaded = ShardedIndex.load(tmp_path / "sh")
    assert len(loaded.shards) == 3
    assert _hits(loaded.search(q, k=6)) == _hits(whole.search(q, k=6))
    assert sorted(loaded.ids()) == sorted(ids)


def test_multivector_merge_and_sharded_search():
    docs = [RNG.normal(size=(int(RNG.integers(2, 9)), DIM)).astype(np.float32) for _ in range(30)]
    ids = [f"m{i:02d}" for i in range(30)]
    whole = MultiVectorIndex.from_vectors(docs, ids)
    shards = [MultiVectorIndex.from_vectors(docs[i : i + 10], ids[i : i + 10]) for i in (0, 10, 20)]
    queries = [RNG.normal(size=(4, DIM)).astype(np.float32) for _ in range(3)]
    expected = _hits(whole.search(queries, k=5))
    assert _hits(merge_indexes(shards).search(queries, k=5)) == expected
    assert _hits(ShardedIndex(shards).search(queries, k=5)) == expected
    fp16 = merge_indexes(shards, storage="fp16")
    assert fp16.config["storage"] == "fp16" and fp16.num_vectors == whole.num_vectors


def test_duplicate_ids_across_shards():
    vecs, ids, metas, shards = _dense_parts(20, 2)
    again = DenseIndex.from_vectors(vecs[:3], ids[:3], metas[:3])  # the same rows indexed twice
    assert len(merge_indexes([*shards, again])) == 20
    other = DenseIndex.from_vectors(vecs[5:6] + 1.0, ids[:1], metas[:1])
    with pytest.raises(ValueError, match="document id 'd000' is in two shards with different contents"):
        merge_indexes([*shards, other])
    with pytest.raises(ValueError, match="differ in kind or dimension"):
        merge_indexes([shards[0], MultiVectorIndex.from_vectors([vecs[:2]])])
    with pytest.raises(ValueError, match="no shards"):
        ShardedIndex([])


def test_load_index_and_bad_sharded_folders(tmp_path):
    _, _, _, shards = _dense_parts(10, 2)
    shards[0].save(tmp_path / "one")
    assert isinstance(load_index(tmp_path / "one"), DenseIndex)
    with pytest.raises(IndexFormatError, match="no readable index manifest"):
        load_index(tmp_path / "missing")
    with pytest.raises(IndexFormatError, match="shards.json: missing or unreadable"):
        ShardedIndex.load(tmp_path / "one")
    ShardedIndex(shards).save(tmp_path / "sh")
    live = version_folder(tmp_path / "sh", marker="shards.json")  # the version CURRENT names
    spec = json.loads((live / "shards.json").read_text())
    spec["shards"][0] = "../one"
    (live / "shards.json").write_text(json.dumps(spec))
    with pytest.raises(IndexFormatError, match="bad shard name '../one'"):
        ShardedIndex.load(tmp_path / "sh")
