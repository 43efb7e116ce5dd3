"""Ray Data on a local cluster started by the tests (2 CPUs): embeddings equal to ``LLM.embed``,
indexes built in shards equal to ones built in process, and a killed actor losing no rows.

Every Ray job here starts two actors that load the engine, so the jobs are few: one embedding
run and one ColBERT run shared by the tests (materialized once), and the fault run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pytestmark = pytest.mark.slow  # about 3 minutes on 2 shared cores; run by `make test`

from vllm_pool.integrations.ray import PoolingPredictor, build_index, map_pooling  # noqa: E402
from vllm_pool.integrations.ray.columns import column_matrix  # noqa: E402
from vllm_pool.retrievers import (  # noqa: E402
    ColBERTConfig,
    ColBERTEncoder,
    DenseIndex,
    MultiVectorIndex,
    ShardedIndex,
)

from .conftest import CORPUS_DIR, _jsonl  # noqa: E402

N_ROWS = 2000
COLBERT = {"mask_augment": False, "doc_maxlen": 48}
FAULT_TIMEOUT_S = 400


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """A few thousand short texts: first sentences of the large corpus, with id and metadata."""
    out = []
    for p in _jsonl(CORPUS_DIR / "python_docs_large.jsonl")[:N_ROWS]:
        text = re.split(r"(?<=[.!?])\s", p["text"], maxsplit=1)[0][:120]
        out.append({"id": p["id"], "text": text, "module": p["module"], "title": p["title"]})
    return out


@pytest.fixture(scope="module")
def reference(rows, default_llm) -> np.ndarray:
    outs = default_llm.embed([r["text"] for r in rows], use_tqdm=False)
    return np.asarray([o.outputs.embedding for o in outs], dtype=np.float32)


def _dataset(ray, rows):
    return ray.data.from_items(rows, override_num_blocks=8)


@pytest.fixture(scope="module")
def embedded(ray_cluster, rows):
    """The embedding job, run once: two CPU actors, Arrow batches of 250 rows."""
    return map_pooling(_dataset(ray_cluster, rows), task="embed", concurrency=2, batch_size=250).materialize()


def _table(ray, ds) -> pa.Table:
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _by_id(table: pa.Table, column: str = "embedding") -> dict[str, np.ndarray]:
    ids = table["id"].to_pylist()
    assert len(ids) == len(set(ids)), "a row came out twice"
    return dict(zip(ids, column_matrix(table[column], column)))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_embeddings_equal_llm_embed(ray_cluster, embedded, rows, reference):
    table = _table(ray_cluster, embedded)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    by_id = _by_id(table)
    assert sorted(by_id) == sorted(r["id"] for r in rows)
    got = np.stack([by_id[r["id"]] for r in rows])
    assert _cos(got, reference).min() >= 0.99999


def _same_hits(got, want) -> bool:
    """Same scores rank by rank, and the same documents (in any order among equal scores)."""
    for g, w in zip(got, want, strict=True):
        if len(g) != len(w) or not np.allclose([h.score for h in g], [h.score for h in w], atol=1e-5):
            return False
        last = w[-1].score if w else 0.0
        if {h.id for h in g if h.score > last + 1e-5} != {h.id for h in w if h.score > last + 1e-5}:
            return False
    return len(got) == len(want)


def test_merged_dense_index_equals_in_process(embedded, rows, reference, tmp_path):
    ids = [r["id"] for r in rows]
    metas = [{"module": r["module"], "title": r["title"]} for r in rows]
    ref = DenseIndex.from_vectors(reference, ids, metas)
    index = build_index(embedded, tmp_path / "dense", kind="dense", rows_per_shard=400)
    assert len(index) == len(ref) and sorted(index.ids()) == sorted(ids)
    for rec, want in zip(index.get(ids[::97]), ref.get(ids[::97])):
        assert rec.metadata == want.metadata
        assert _cos(rec.vectors, want.vectors) >= 0.99999
    queries = reference[[3, 400, 1234, 1999]] + 0.05
    assert _same_hits(index.search(queries, k=10), ref.search(queries, k=10))
    loaded = DenseIndex.load(tmp_path / "dense")
    flt = {"module": rows[400]["module"]}
    assert _same_hits(loaded.search(queries, k=10, filter=flt), ref.search(queries, k=10, filter=flt))
    shards = build_index(embedded, tmp_path / "sharded", kind="dense", rows_per_shard=400, merge=False)
    assert isinstance(shards, ShardedIndex) and len(shards.shards) >= 5 and len(shards) == len(ref)
    loaded_shards = ShardedIndex.load(tmp_path / "sharded")
    assert _same_hits(loaded_shards.search(queries, k=10), ref.search(queries, k=10))


def test_merged_multivector_index_equals_in_process(ray_cluster, rows, default_llm, tmp_path):
    part = rows[:300]
    ds = map_pooling(_dataset(ray_cluster, part), task="token_embed", colbert=COLBERT, concurrency=2,
                     batch_size=50).materialize()  # fmt: skip
    ids = [r["id"] for r in part]
    encoder = ColBERTEncoder.from_llm(default_llm, ColBERTConfig(**COLBERT))
    ref = MultiVectorIndex.from_texts([r["text"] for r in part], encoder, ids=ids, metadatas=[
        {"module": r["module"], "title": r["title"]} for r in part])  # fmt: skip
    index = build_index(ds, kind="multivector", rows_per_shard=64)
    assert sorted(index.ids()) == sorted(ids)
    for rec, want in zip(index.get(ids), ref.get(ids)):
        assert rec.metadata == want.metadata and rec.vectors.shape == want.vectors.shape
        assert _cos(rec.vectors, want.vectors).min() >= 0.99999
    queries = encoder.encode_queries(["How do I parse JSON?", "compress with gzip", "regular expression"])
    expected = ref.search(queries, k=5)
    assert _same_hits(index.search(queries, k=5), expected)
    sharded = build_index(ds, tmp_path / "mv", kind="multivector", rows_per_shard=64, merge=False)
    assert len(sharded.shards) >= 4 and len(sharded) == len(ref)
    assert _same_hits(sharded.search(queries, k=5), expected)
    fp16 = build_index(ds, tmp_path / "fp16", kind="multivector", merge=False, storage="fp16")
    assert all(s.config["storage"] == "fp16" for s in fp16.shards) and len(fp16) == len(ref)


class DiesOnce(PoolingPredictor):
    """Kills its own actor process (SIGKILL) on its second batch, once per job."""

    def __init__(self, *args, marker: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # already killed one actor
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def test_killed_actor_loses_no_rows_and_rerun_gives_the_same_index(ray_cluster, embedded, rows, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    marker = tmp_path / "killed"
    job = map_pooling(_dataset(ray_cluster, rows), task="embed", concurrency=2, batch_size=250,
                      predictor_class=DiesOnce, predictor_kwargs={"marker": str(marker)},
                      max_restarts=2, max_task_retries=4)  # fmt: skip
    result: dict = {}

    def run() -> None:
        try:
            result["ds"] = job.materialize()
        except BaseException as exc:  # reported below
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(FAULT_TIMEOUT_S)
    assert not worker.is_alive(), f"the job did not finish within {FAULT_TIMEOUT_S}s after a kill"
    assert "error" not in result, result.get("error")
    assert marker.exists(), "no actor was killed"
    survived = _by_id(_table(ray_cluster, result["ds"]))
    clean = _by_id(_table(ray_cluster, embedded))
    assert sorted(survived) == sorted(clean)  # every row, once
    assert min(_cos(survived[i], clean[i]) for i in clean) >= 0.99999

    # the same job again (ids generated from the rows' content): the same index
    first = build_index(embedded.drop_columns(["id"]), tmp_path / "a", kind="dense")
    second = build_index(result["ds"].drop_columns(["id"]), tmp_path / "b", kind="dense", rows_per_shard=123)
    distinct = {(r["text"], r["module"], r["title"]) for r in rows}  # identical rows: one document
    assert first.ids() == second.ids() and len(first) == len(distinct)
    from vllm_pool.retrievers.persistence import version_folder  # the live version of each folder

    docs_a = json.loads((version_folder(tmp_path / "a") / "docs.json").read_text())
    docs_b = json.loads((version_folder(tmp_path / "b") / "docs.json").read_text())
    assert docs_a == docs_b
    va = np.stack([r.vectors for r in first.get(first.ids())])
    vb = np.stack([r.vectors for r in second.get(second.ids())])
    np.testing.assert_allclose(va, vb, atol=1e-6)


def test_two_batches_with_the_same_ids_and_other_contents_get_two_shards(tmp_path):
    from vllm_pool.integrations.ray.shards import write_shard
    from vllm_pool.retrievers.sharded import merge_indexes

    rng = np.random.default_rng(0)
    opts = {"kind": "dense", "vector_column": "embedding", "id_column": "id", "text_column": "text"}
    opts.update(metadata_columns=None, shard_kwargs={}, folder=str(tmp_path))

    def batch(version: str, order: list[int]) -> pa.Table:
        vectors = rng.normal(size=(3, 8)).astype(np.float32)[order]
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 8)
        return pa.table({"id": [f"r{i}" for i in order], "embedding": column, "version": [version] * 3})

    old, new = batch("old", [0, 1, 2]), batch("new", [2, 1, 0])
    names = [write_shard(b, **opts)["shard"][0].as_py() for b in (old, new, old)]
    assert names[0] != names[1] and names[2] == names[0]  # a retried batch rewrites its own shard
    shuffled = old.take([2, 0, 1])
    assert write_shard(shuffled, **opts)["shard"][0].as_py() == names[0]
    shards = [DenseIndex.load(tmp_path / name) for name in names[:2]]
    with pytest.raises(ValueError, match="in two shards with different contents"):
        merge_indexes(shards)
