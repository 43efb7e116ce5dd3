"""ColBERT faults found by a bug hunt: a failed PLAID re-train, a CUDA index loaded on a CPU,
long-document replacement refused by the index, rerank error positions, PyLate's query
expansion token and its empty prefixes (with the fake encoder and small random data)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder, MultiVectorIndex, long_documents, rerank
from vllm_pool.retrievers.persistence import version_folder
from vllm_pool.retrievers.residual_codec import ResidualCodec

FILLER = " ".join(f"filler{i}" for i in range(40))


def unit_docs(seed: int, n: int, dim: int = 16, length: int = 10) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = [rng.standard_normal((length, dim)).astype(np.float32) for _ in range(n)]
    return [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]


def snapshot(index: MultiVectorIndex, queries: list[np.ndarray]) -> tuple:
    """What a caller can see of an index: ids, vectors, token count, and search results."""
    ids = index.ids()
    vectors = [r.vectors for r in index.get(ids)]
    hits = [[(h.id, h.score) for h in q] for q in index.search(queries, k=5)]
    return ids, vectors, index.num_vectors, hits


# -- PLAID: a failed re-train -------------------------------------------------------------
def _raise(exc: BaseException):
    def boom(*args, **kwargs):
        raise exc

    return boom


@pytest.mark.parametrize(
    ("target", "exc"),
    [
        ("train", MemoryError("out of memory while training centroids")),
        ("train", KeyboardInterrupt()),
        ("encode", RuntimeError("failed while re-encoding")),  # after the new codec is trained
    ],
)
def test_failed_plaid_retrain_leaves_the_index_unchanged(monkeypatch, target, exc):
    docs = unit_docs(0, 200)
    index = MultiVectorIndex(16, index_type="plaid")
    index.add(docs[:20], ids=[str(i) for i in range(20)])
    queries = [docs[3], docs[11]]
    before = snapshot(index, queries)
    trained_on = index._store.trained_on
    if target == "train":
        monkeypatch.setattr(ResidualCodec, "train", classmethod(_raise(exc)))
    else:
        real_train = ResidualCodec.train.__func__

        def train(cls, *args, **kwargs):  # the new codec: its encode fails
            codec = real_train(cls, *args, **kwargs)
            codec.encode = _raise(exc)
            return codec

        monkeypatch.setattr(ResidualCodec, "train", classmethod(train))
    with pytest.raises(type(exc)):
        index.add(docs[20:], ids=[str(i) for i in range(20, 200)])  # 4x the training set: re-train
    monkeypatch.undo()
    after = snapshot(index, queries)
    assert after[0] == before[0] and after[2] == before[2] and after[3] == before[3]
    for got, want in zip(after[1], before[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert index._store.trained_on == trained_on
    index.add(docs[20:], ids=[str(i) for i in range(20, 200)])  # and it still grows and re-trains
    assert len(index) == 200 and index._store.trained_on == 2000
    assert index.search(docs[150], k=1)[0][0].id == "150"


# -- an index saved with device="cuda", loaded where there is no GPU ----------------------
@pytest.mark.parametrize("index_type", ["flat", "plaid"])
def test_cuda_index_loads_and_searches_on_a_cpu_machine(tmp_path, monkeypatch, caplog, index_type):
    docs = unit_docs(1, 40, length=8)
    index = MultiVectorIndex.from_vectors(docs, index_type=index_type, device="cpu")
    want = [[(h.id, h.score) for h in q] for q in index.search(docs[:3], k=3)]
    index.save(tmp_path / "i")
    manifest = version_folder(tmp_path / "i") / "manifest.json"
    data = json.loads(manifest.read_text())
    data["config"]["device"] = "cuda"  # what a save on a GPU machine writes
    manifest.write_text(json.dumps(data))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    with caplog.at_level(logging.WARNING):
        loaded = MultiVectorIndex.load(tmp_path / "i")
    assert "device='cuda'" in caplog.text and loaded.config["device"] == "cpu"
    got = [[(h.id, h.score) for h in q] for q in loaded.search(docs[:3], k=3)]
    assert [[i for i, _ in q] for q in got] == [[i for i, _ in q] for q in want]
    np.testing.assert_allclose([[s for _, s in q] for q in got], [[s for _, s in q] for q in want], rtol=1e-5)
    chosen = MultiVectorIndex.load(tmp_path / "i", device="cpu")  # the caller's choice wins
    assert chosen.config["device"] == "cpu" and chosen.search(docs[5], k=1)[0][0].id == "5"


def test_saved_cpu_or_automatic_device_is_kept(tmp_path):
    docs = unit_docs(2, 10)
    for device in (None, "cpu"):
        MultiVectorIndex.from_vectors(docs, device=device).save(tmp_path / str(device))
        assert MultiVectorIndex.load(tmp_path / str(device)).config["device"] == device


# -- long documents: a refused replacement loses nothing -----------------------------------
@pytest.fixture
def enc(fake_encoder):
    return ColBERTEncoder(fake_encoder, ColBERTConfig(doc_maxlen=16, skip_punctuation=False))


@pytest.mark.parametrize("old_text", ["the cat sat on the mat", FILLER + " zebra"])
@pytest.mark.parametrize("new_text", ["an updated cat text", FILLER + " giraffe"])
def test_refused_replacement_keeps_the_old_document(enc, old_text, new_text):
    index = MultiVectorIndex(16)
    long_documents.add_documents(index, enc, [old_text, "other"], ["doc1", "doc2"], [{"v": 1}, {}], overlap=4)
    before = (index.ids(), [r.vectors for r in index.get(index.ids())])
    with pytest.raises(TypeError, match="cannot be saved in metadata"):
        long_documents.add_documents(index, enc, [new_text], ["doc1"], [{"when": {1, 2}}], overlap=4)
    assert index.ids() == before[0]
    for got, want in zip([r.vectors for r in index.get(index.ids())], before[1], strict=True):
        np.testing.assert_array_equal(got, want)
    (rec,) = long_documents.get(index, ["doc1"])
    assert rec.metadata == {"v": 1}


@pytest.mark.parametrize(
    ("old_text", "new_text"),
    [
        (FILLER + " zebra", "now short"),  # split -> fits: every window goes
        ("short", FILLER + " zebra"),  # fits -> split: the unsplit document goes
        (FILLER + " " + FILLER, FILLER),  # fewer windows: the extra ones go
    ],
)
def test_replacement_keeps_exactly_the_new_windows(enc, old_text, new_text):
    index = MultiVectorIndex(16)
    long_documents.add_documents(index, enc, [old_text, "other"], ["d", "o"], [{}, {}], overlap=4)
    long_documents.add_documents(index, enc, [new_text], ["d"], [{"new": True}], overlap=4)
    fresh = MultiVectorIndex(16)  # the reference: the new document indexed from scratch
    long_documents.add_documents(fresh, enc, ["other", new_text], ["o", "d"], [{}, {"new": True}], overlap=4)
    assert sorted(index.ids()) == sorted(fresh.ids())
    for doc_id in fresh.ids():
        (got,), (want,) = index.get([doc_id]), fresh.get([doc_id])
        assert got.metadata == want.metadata
        np.testing.assert_array_equal(got.vectors, want.vectors)


# -- rerank: errors name the caller's positions ---------------------------------------------
def test_rerank_names_the_callers_position(fake_encoder):
    enc = ColBERTEncoder(fake_encoder)
    with pytest.raises(TypeError, match=r"documents\[70\]: expected a string, got int"):
        rerank("cat", ["a cat"] * 70 + [5], encoder=enc, batch_size=64)
    assert fake_encoder.calls == []  # refused before anything was encoded


# -- query expansion token: [MASK], else EOS, else pad (PyLate) -----------------------------
def pylate_expansion_id(tok) -> int | None:
    """PyLate's choice (``pylate/models/colbert.py``): the mask token, else EOS, else pad."""
    for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tok, name, None) is not None:
            return getattr(tok, name)
    return None


@pytest.mark.parametrize(
    ("mask", "eos", "pad"),
    [(4, 3, 0), (None, 3, 0), (None, None, 0), (None, 7, None)],
)
def test_query_expansion_token_follows_pylate(fake_encoder, mask, eos, pad):
    tok = fake_encoder.tokenizer
    tok.mask_token_id, tok.eos_token_id, tok.pad_token_id = mask, eos, pad
    enc = ColBERTEncoder(fake_encoder, ColBERTConfig(query_maxlen=8, mask_augment=True))
    (ids,) = enc.query_token_ids(["cat"])
    assert ids[3:] == [pylate_expansion_id(tok)] * 5  # [CLS] cat [SEP], then the expansion


def test_query_expansion_without_any_candidate_token(fake_encoder):
    tok = fake_encoder.tokenizer
    tok.mask_token_id = tok.pad_token_id = None
    with pytest.raises(ValueError, match="mask, EOS or pad token"):
        ColBERTEncoder(fake_encoder, ColBERTConfig(mask_augment=True))
    assert ColBERTEncoder(fake_encoder).query_token_ids(["cat"]) == [[2, tok.encode("cat")[1], 3]]


# -- an empty marker (PyLate's empty prefix) is no marker -----------------------------------
def test_empty_markers_are_no_markers(fake_encoder):
    none = ColBERTEncoder(fake_encoder, ColBERTConfig(mask_augment=True, query_maxlen=10))
    empty = ColBERTEncoder(
        fake_encoder, ColBERTConfig(mask_augment=True, query_maxlen=10, query_marker="", doc_marker="")
    )
    assert empty.query_marker_id is None and empty.doc_marker_id is None
    texts = ["a cat, on a mat", FILLER]
    assert empty.query_token_ids(texts) == none.query_token_ids(texts)
    assert empty.document_token_ids(texts) == none.document_token_ids(texts)
