"""Ray integration fixes: list-typed metadata columns are metadata (and enter generated ids),
one id on two different rows of a batch raises, and an empty batch has the width of a full
one when ``dimensions`` is set. The shard writer is called in this process; one tiny job runs
on the shared local cluster (no engine in its actors)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")

from vllm_pool.integrations.ray import PoolingPredictor, build_index  # noqa: E402
from vllm_pool.integrations.ray.columns import column_matrix, vectors_column  # noqa: E402
from vllm_pool.integrations.ray.shards import write_shard  # noqa: E402
from vllm_pool.retrievers import DenseIndex  # noqa: E402

from vllm_pool import PoolingParams  # noqa: E402

ROWS = [
    {"text": "Use json.loads to parse JSON.", "tags": ["python", "json"], "source": "py-docs"},
    {"text": "Use json.loads to parse JSON.", "tags": ["faq"], "source": "py-docs"},
    {"text": "Rust has serde.", "tags": ["rust"], "source": "rs-docs"},
]
OPTS = {"kind": "dense", "vector_column": "embedding", "id_column": "id", "text_column": "text"}


@pytest.fixture(scope="module")
def reference(default_llm) -> np.ndarray:
    outs = default_llm.embed([r["text"] for r in ROWS], use_tqdm=False)
    return np.asarray([o.outputs.embedding for o in outs], dtype=np.float32)


def _write(batch: pa.Table, folder) -> DenseIndex:
    out = write_shard(batch, folder=str(folder), metadata_columns=None, shard_kwargs={}, **OPTS)
    return DenseIndex.load(folder / out["shard"][0].as_py())


def _metas(index) -> list[dict]:
    return sorted((r.metadata for r in index.get(index.ids())), key=lambda m: m["tags"])


def _want(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "text"} for r in rows), key=lambda m: m["tags"])


def test_vector_columns_are_lists_of_floats_or_tensors():
    from ray.data.extensions import ArrowTensorArray
    from vllm_pool.integrations.ray.shards import holds_vectors

    assert holds_vectors(pa.list_(pa.float32(), 4)) and holds_vectors(pa.list_(pa.list_(pa.float16(), 2)))
    assert holds_vectors(ArrowTensorArray.from_numpy(np.ones((2, 3), dtype=np.int64)).type)
    assert not holds_vectors(pa.list_(pa.string())) and not holds_vectors(pa.list_(pa.int64()))
    assert not holds_vectors(pa.string())


def test_list_metadata_is_kept_and_tells_rows_apart(reference, tmp_path):
    batch = pa.table({**{k: [r[k] for r in ROWS] for k in ROWS[0]}, "embedding": vectors_column(reference)})
    index = _write(batch, tmp_path)
    assert len(index) == len(ROWS)  # the first two rows differ only in their tags
    assert _metas(index) == _want(ROWS)


def test_one_id_on_two_different_rows_of_a_batch_raises(reference, tmp_path):
    batch = pa.table({
        "id": ["a", "b", "a"], "text": [r["text"] for r in ROWS], "source": ["x", "y", "z"],
        "embedding": vectors_column(reference),
    })  # fmt: skip
    with pytest.raises(ValueError, match="document id 'a' is in two rows of one batch with different"):
        _write(batch, tmp_path)
    same_meta = batch.set_column(2, "source", pa.array(["x", "y", "x"]))  # other vectors
    with pytest.raises(ValueError, match="document id 'a'"):
        _write(same_meta, tmp_path)
    repeated = same_meta.set_column(3, "embedding", vectors_column(reference[[0, 1, 0]]))
    index = _write(repeated, tmp_path)  # the same row twice: one document
    assert sorted(index.ids()) == ["a", "b"]
    np.testing.assert_allclose(index.get(["a"])[0].vectors, reference[0], atol=1e-6)


@pytest.mark.slow
def test_build_index_keeps_list_metadata(ray_cluster, reference, tmp_path):
    items = [{**r, "embedding": v} for r, v in zip(ROWS, reference, strict=True)]  # a tensor column
    index = build_index(ray_cluster.data.from_items(items), tmp_path / "index", kind="dense")
    assert len(index) == len(ROWS) and _metas(index) == _want(ROWS)
    for rec in index.get(index.ids()):
        row = next(i for i, r in enumerate(ROWS) if r["tags"] == rec.metadata["tags"])
        np.testing.assert_allclose(rec.vectors, reference[row], atol=1e-6)


def test_empty_batch_has_the_dimensions_of_a_full_one(tiny_bert):
    matryoshka = {"is_matryoshka": True}
    predictor = PoolingPredictor(str(tiny_bert), task="embed", dimensions=8, hf_overrides=matryoshka)
    texts = ["hello world", "abc"]
    full = predictor(pa.table({"text": texts}))
    empty = predictor(pa.table({"text": pa.array([], type=pa.string())}))
    want = predictor.llm.embed(texts, PoolingParams(dimensions=8), use_tqdm=False)
    got = column_matrix(full["embedding"], "embedding")
    np.testing.assert_allclose(got, [o.outputs.embedding for o in want], rtol=1e-5, atol=1e-6)
    assert empty.num_rows == 0 and empty.schema == full.schema
    pa.concat_tables([full, empty])  # Ray concatenates the batches of a block
    numpy_empty = predictor({"text": np.asarray([], dtype=object)})["embedding"]
    assert numpy_empty.shape == (0, 8)
