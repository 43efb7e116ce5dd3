"""`PoolingPredictor`, its columns and the shard writer, called in this process (no Ray cluster)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")

from vllm_pool.integrations.ray import PoolingPredictor, map_pooling  # noqa: E402
from vllm_pool.integrations.ray.columns import (  # noqa: E402
    column_matrix,
    column_token_vectors,
    token_vectors_column,
    vectors_column,
)
from vllm_pool.integrations.ray.shards import content_id, write_shard  # noqa: E402
from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder, DenseIndex, MultiVectorIndex  # noqa: E402

TEXTS = [
    "How do I parse JSON in Python?",
    "The csv module reads and writes comma-separated files.",
    "hashlib computes SHA-256 digests.",
    "Temporary files are created by the tempfile module.",
    "A short one.",
]


@pytest.fixture(scope="module")
def embedder() -> PoolingPredictor:
    return PoolingPredictor(task="embed")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_arrow_batch_gets_fixed_size_list_embeddings_equal_to_llm_embed(embedder, default_llm):
    batch = pa.table({"text": TEXTS, "source": list(range(len(TEXTS)))})
    out = embedder(batch)
    assert isinstance(out, pa.Table)
    assert out.column_names == ["text", "source", "embedding"]
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    ref = np.asarray([o.outputs.embedding for o in default_llm.embed(TEXTS, use_tqdm=False)])
    assert _cos(column_matrix(out["embedding"], "embedding"), ref).min() >= 0.99999


def test_numpy_and_pandas_batches(embedder):
    arrow = column_matrix(embedder(pa.table({"text": TEXTS}))["embedding"], "embedding")
    out = embedder({"text": np.asarray(TEXTS, dtype=object)})
    assert out["embedding"].dtype == np.float32 and out["embedding"].shape == (len(TEXTS), 384)
    np.testing.assert_allclose(out["embedding"], arrow, atol=1e-6)
    frame = embedder(pa.table({"text": TEXTS}).to_pandas())
    assert isinstance(frame, pa.Table)
    np.testing.assert_allclose(column_matrix(frame["embedding"], "embedding"), arrow, atol=1e-6)


def test_empty_batch(embedder):
    out = embedder(pa.table({"text": pa.array([], type=pa.string())}))
    assert out.num_rows == 0 and out.schema.field("embedding").type == pa.list_(pa.float32(), 384)


def test_dimensions_and_custom_columns(default_llm):
    from vllm_pool import PoolingParams

    pred = PoolingPredictor(
        task="embed", text_column="body", output_column="vec", normalize=False, max_num_seqs=8
    )
    assert pred.llm.max_num_seqs == 8
    out = pred(pa.table({"body": TEXTS}))
    got = column_matrix(out["vec"], "vec")
    raw = default_llm.embed(TEXTS, PoolingParams(normalize=False), use_tqdm=False)
    ref = [o.outputs.embedding for o in raw]
    np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)


def test_token_embed_is_the_colbert_encoder_with_its_settings(default_llm):
    settings = {"doc_maxlen": 12, "skip_punctuation": True}
    pred = PoolingPredictor(task="token_embed", colbert=settings)
    out = pred(pa.table({"text": TEXTS}))
    assert out.schema.field("token_embed").type == pa.list_(pa.list_(pa.float32(), 384))
    got = column_token_vectors(out["token_embed"], "token_embed")
    ref = ColBERTEncoder.from_llm(default_llm, ColBERTConfig(**settings)).encode_documents(TEXTS)
    assert [len(g) for g in got] == [len(r) for r in ref]
    assert max(len(g) for g in got) <= 12
    for g, r in zip(got, ref):
        assert _cos(g, r).min() >= 0.99999
    numpy_out = pred({"text": np.asarray(TEXTS, dtype=object)})["token_embed"]
    assert numpy_out.dtype == object and numpy_out[0].shape == got[0].shape


def test_score_rows_against_llm_score(default_llm):
    pred = PoolingPredictor(task="score")
    queries = ["parse JSON"] * 3 + ["hash a file"] * 2
    out = pred(pa.table({"query": queries, "text": TEXTS}))
    assert out.schema.field("score").type == pa.float32()
    ref = [o.outputs.score for o in default_llm.score(queries, TEXTS, use_tqdm=False)]
    np.testing.assert_allclose(out["score"].to_numpy(), ref, atol=1e-6)


def test_bad_settings_fail_before_the_engine_loads():
    with pytest.raises(TypeError, match="unknown engine options \\['max_num_seq'\\]"):
        PoolingPredictor(task="embed", max_num_seq=4)
    with pytest.raises(ValueError, match="task='classify' is not supported"):
        PoolingPredictor(task="classify")
    with pytest.raises(ValueError, match="colbert settings apply to task='token_embed' only"):
        PoolingPredictor(task="embed", colbert={"doc_maxlen": 8})
    with pytest.raises(TypeError, match="bad colbert settings"):
        PoolingPredictor(task="token_embed", colbert={"doc_len": 8})
    with pytest.raises(TypeError, match="not a plain value"):
        PoolingPredictor(task="embed", hf_overrides=lambda c: c)
    with pytest.raises(ValueError, match="max_num_seqs must be a positive integer, got 0"):
        PoolingPredictor(task="embed", max_num_seqs=0)  # EngineArgs' own check


def test_map_pooling_checks_on_the_driver():
    class NotADataset:
        def map_batches(self, *args, **kwargs):
            raise AssertionError("must fail before reaching Ray")

    with pytest.raises(TypeError, match="unknown engine options"):
        map_pooling(NotADataset(), task="embed", dtyp="bfloat16")
    with pytest.raises(ValueError, match="concurrency"):
        map_pooling(NotADataset(), task="embed", concurrency=0)
    with pytest.raises(ValueError, match="dimensions and normalize apply to task='embed' only"):
        map_pooling(NotADataset(), task="score", dimensions=8)


def test_bad_rows_name_the_column_and_row(embedder):
    with pytest.raises(KeyError, match="no column 'text'"):
        embedder(pa.table({"body": TEXTS}))
    with pytest.raises(TypeError, match="column 'text', row 1: expected a string, got NoneType"):
        embedder(pa.table({"text": ["ok", None]}))
    assert embedder(pa.table({"text": ["still works"]})).num_rows == 1


def test_column_round_trips():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(column_matrix(vectors_column(m), "v"), m)
    chunked = pa.chunked_array([vectors_column(m[:2]), vectors_column(m[2:])])
    np.testing.assert_array_equal(column_matrix(chunked, "v"), m)
    docs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (1, 5, 2)]
    back = column_token_vectors(token_vectors_column(docs, 3), "t")
    assert all(np.array_equal(a, b) for a, b in zip(back, docs))
    with pytest.raises(ValueError, match="column 'v' holds string"):
        column_matrix(pa.array(["x"]), "v")


def _vector_batch(n: int, with_ids: bool) -> pa.Table:
    rng = np.random.default_rng(n)
    cols = {"text": [f"text {i}" for i in range(n)], "module": [f"m{i % 3}" for i in range(n)]}
    if with_ids:
        cols["id"] = [f"doc-{i}" for i in range(n)]
    table = pa.table(cols)
    return table.append_column("embedding", vectors_column(rng.normal(size=(n, 8)).astype(np.float32)))


def test_write_shard_carries_ids_and_metadata(tmp_path):
    batch = _vector_batch(6, with_ids=True)
    kwargs = dict(kind="dense", vector_column="embedding", id_column="id", text_column="text",
                  metadata_columns=None, shard_kwargs={"normalize": False})  # fmt: skip
    row = write_shard(batch, folder=str(tmp_path), **kwargs).to_pylist()[0]
    assert row["count"] == 6 and row["ids"] == [f"doc-{i}" for i in range(6)]
    shard = DenseIndex.load(tmp_path / row["shard"])
    (rec,) = shard.get(["doc-4"])
    assert rec.metadata == {"module": "m1"}
    np.testing.assert_array_equal(rec.vectors, column_matrix(batch["embedding"], "e")[4])
    again = write_shard(batch, folder=str(tmp_path), **kwargs).to_pylist()[0]
    assert again["shard"] == row["shard"]  # a retried task rewrites the same shard
    assert write_shard(batch.slice(0, 0), folder=str(tmp_path), **kwargs).num_rows == 0


def test_write_shard_generates_content_ids_and_merges_repeated_rows(tmp_path):
    batch = _vector_batch(4, with_ids=False)
    batch = pa.concat_tables([batch, batch.slice(1, 1)])  # row 1 twice
    out = write_shard(batch, folder=str(tmp_path), kind="dense", vector_column="embedding", id_column="id",
                      text_column="text", metadata_columns=["module"], shard_kwargs={})  # fmt: skip
    row = out.to_pylist()[0]
    assert row["count"] == 4
    assert row["ids"][1] == content_id("text 1", {"module": "m1"})
    assert len(set(row["ids"])) == 4


def test_write_shard_multivector_and_errors(tmp_path):
    docs = [np.eye(4, 8, k=i, dtype=np.float32) for i in range(3)]
    batch = pa.table({"id": ["a", "b", "c"]}).append_column("token_embed", token_vectors_column(docs, 8))
    row = write_shard(batch, folder=str(tmp_path), kind="multivector", vector_column="token_embed",
                      id_column="id", text_column="text", metadata_columns=None,
                      shard_kwargs={}).to_pylist()[0]  # fmt: skip
    shard = MultiVectorIndex.load(tmp_path / row["shard"])
    np.testing.assert_array_equal(shard.get(["b"])[0].vectors, docs[1])
    with pytest.raises(KeyError, match="no vector column 'embedding'"):
        write_shard(batch, folder=str(tmp_path), kind="dense", vector_column="embedding", id_column="id",
                    text_column="text", metadata_columns=None, shard_kwargs={})  # fmt: skip
    with pytest.raises(KeyError, match="needs an id column 'key' or a text column 'text'"):
        write_shard(batch, folder=str(tmp_path), kind="multivector", vector_column="token_embed",
                    id_column="key", text_column="text", metadata_columns=None, shard_kwargs={})  # fmt: skip


def test_token_embed_takes_the_checkpoints_colbert_settings(tiny_dir, tmp_path):
    """An HF_ColBERT folder: the actor's encoder starts from ``artifact.metadata`` (markers,
    lengths), the given fields on top, as ``ColBERTEncoder.default_config`` does in process."""
    import colbert_checkpoints as ck
    import tiny_models

    from vllm_pool import LLM

    meta = {
        "query_maxlen": 16,
        "doc_maxlen": 40,
        "query_token_id": "[unused0]",
        "doc_token_id": "[unused1]",
        "mask_punctuation": True,
    }
    folder = ck.save_hf_colbert(tmp_path / "hf", tiny_models.bert(tiny_dir / "ray_colbert_base"), 12, meta)
    docs = ["paris is the capital city of france.", "python code with a class; and a dict!"]
    pred = PoolingPredictor(model=str(folder), task="token_embed", colbert={"doc_maxlen": 24})
    assert pred.encoder.config.doc_marker == "[unused1]" and pred.encoder.config.doc_maxlen == 24
    got = column_token_vectors(pred(pa.table({"text": docs}))["token_embed"], "token_embed")
    want = ck.colbert_ai_vectors(folder, docs, False)  # colbert-ai semantics at doc_maxlen 40 >= 24 tokens
    assert ck.min_cosine(got, want) >= 0.9999
    tokens = ColBERTEncoder.from_llm(LLM(str(folder))).encoder
    ref = ColBERTEncoder(tokens, ColBERTEncoder.default_config(tokens, doc_maxlen=24)).encode_documents(docs)
    assert [len(g) for g in got] == [len(r) for r in ref]
