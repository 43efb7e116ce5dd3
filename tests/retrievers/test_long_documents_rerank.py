"""Long documents split into windows (indexed under their parent id, hits merged) and
ColBERT reranking of given texts, with the context-free fake encoder and a direct MaxSim."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder, MultiVectorIndex, long_documents, rerank

FILLER = " ".join(f"filler{i}" for i in range(60))


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).sum())


@pytest.fixture
def enc(fake_encoder):
    return ColBERTEncoder(fake_encoder, ColBERTConfig(doc_maxlen=16, skip_punctuation=False))


def test_windows_cover_the_whole_document(enc):
    text = FILLER + " zebra"
    parents, ids, cut = enc.document_windows([text, "short text"], overlap=4)
    content = enc.tokenizer.encode(text, add_special_tokens=False)
    assert cut == 1 and parents[-1] == 1 and set(parents[:-1]) == {0}
    windows = [w[1:-1] for p, w in zip(parents, ids) if p == 0]
    assert all(len(w) <= 14 for w in windows) and all(len(w) + 2 <= 16 for w in windows)
    assert windows[0] == content[:14] and windows[-1][-1] == content[-1]  # the end is kept
    for a, b in zip(windows, windows[1:]):
        assert a[-4:] == b[:4]  # consecutive windows overlap by 4 tokens
    with pytest.raises(ValueError, match="overlap must be in"):
        enc.document_windows([text], overlap=14)


def test_split_index_finds_the_end_of_a_long_document(enc, caplog):
    index = MultiVectorIndex(16)
    texts = [FILLER + " zebra giraffe", "a short note about cats", FILLER]
    ids = ["long", "short", "filler"]
    metas = [{"kind": "a", "text": "T0"}, {"kind": "b", "text": "T1"}, {"kind": "a", "text": "T2"}]
    long_documents.add_documents(index, enc, texts, ids, metas, overlap=4, first_window_only=["text"])
    assert "long" not in index and long_documents.get(index, ["long"])[0].metadata == metas[0]
    q = enc.encode_queries(["zebra giraffe"])
    (hits,) = long_documents.search(index, q, k=3)
    assert [h.id for h in hits][0] == "long" and len({h.id for h in hits}) == 3
    assert hits[0].metadata == metas[0]  # the first window's metadata, internal keys dropped
    # the score of a split document is its best window's MaxSim
    _, vectors = enc.encode_document_windows([texts[0]], overlap=4)
    assert hits[0].score == pytest.approx(max(_maxsim(q[0], v) for v in vectors), rel=1e-5)
    (filtered,) = long_documents.search(index, q, k=3, filter={"kind": "a"})
    assert {h.id for h in filtered} == {"long", "filler"}
    # cut instead of split: the end is lost, with a warning naming how many were cut
    plain = MultiVectorIndex(16)
    with caplog.at_level(logging.WARNING, logger="vllm_pool.retrievers.colbert"):
        plain.add(enc.encode_documents(texts), ids)
    assert "2 of 3 documents are longer than doc_maxlen=16" in caplog.text
    assert plain.search(q, k=1)[0][0].score < hits[0].score
    # re-adding replaces every window; removing by parent removes them all
    long_documents.add_documents(index, enc, ["now short"], ["long"], [{}], overlap=4)
    assert "long" in index and not long_documents._windows_of(index, "long")
    assert long_documents.remove(index, ["filler", "missing"]) == 1
    assert sorted(r.id for r in long_documents.get(index, ["long", "short", "filler"])) == ["long", "short"]
    # a bad text: nothing is added, nothing already indexed is lost
    before = len(index)
    with pytest.raises(TypeError, match=r"documents\[1\]: expected a string"):
        long_documents.add_documents(index, enc, [FILLER, 7, "x"], ["short", "e", "x"], [{}] * 3, overlap=4)
    assert len(index) == before and "short" in index and "x" not in index


def test_rerank_orders_by_maxsim(enc):
    docs = ["dogs bark loudly", "cats purr softly", "cats and dogs", "python code"]
    got = rerank("cats purr", docs, encoder=enc)
    q = enc.encode_queries(["cats purr"])[0]
    want = [_maxsim(q, d) for d in enc.encode_documents(docs)]
    assert [i for i, _ in got] == sorted(range(4), key=lambda i: -want[i])
    np.testing.assert_allclose([s for _, s in got], sorted(want, reverse=True), rtol=1e-5)
    assert rerank("cats purr", docs, k=2, encoder=enc, batch_size=3) == got[:2]
    assert rerank("cats purr", [], encoder=enc) == []
    long = FILLER + " cats purr"
    split = rerank("cats purr", [long, "dogs"], encoder=enc, split_long_documents=True, window_overlap=4)
    assert split[0][0] == 0


def test_rerank_bad_input(enc):
    with pytest.raises(ValueError, match="k must be >= 1"):
        rerank("q", ["a"], k=0, encoder=enc)
    with pytest.raises(TypeError, match="not a single string"):
        rerank("q", "a doc", encoder=enc)
    assert len(rerank("q", ["a", ""], encoder=enc)) == 2  # a blank page is scored, not an error
    with pytest.raises(ValueError, match=r"queries\[0\] is empty"):
        rerank(" ", ["a"], encoder=enc)
