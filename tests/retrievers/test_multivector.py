import numpy as np
import pytest
import torch
from vllm_pool.retrievers import MultiVectorIndex, maxsim, pad_token_vectors


def exhaustive_top(docs, queries, k):
    tokens, mask = pad_token_vectors(docs)
    q_tokens, q_mask = pad_token_vectors(queries)
    scores = maxsim(q_tokens, tokens, q_mask, mask).numpy()
    return [list(np.argsort(-row, kind="stable")[:k]) for row in scores], scores


def ids_of(hits):
    return [h.id for h in hits]


def recall(found, expected, k=10):
    return np.mean(
        [len(set(ids_of(f)) & {str(i) for i in e}) / k for f, e in zip(found, expected, strict=True)]
    )


@pytest.fixture
def corpus(rng, make_docs):
    return make_docs(rng, 300, 16), make_docs(rng, 15, 16, 4, 9)


def test_default_equals_exhaustive_maxsim(corpus):
    docs, queries = corpus
    index = MultiVectorIndex.from_vectors(docs)
    expected, scores = exhaustive_top(docs, queries, 10)
    found = index.search(queries, k=10)
    for qi, (hits, exp) in enumerate(zip(found, expected, strict=True)):
        assert ids_of(hits) == [str(i) for i in exp]
        np.testing.assert_allclose([h.score for h in hits], scores[qi, exp], rtol=1e-5)
    assert ids_of(index.search(queries, 10, exhaustive=True)[0]) == ids_of(found[0])


def test_few_candidates_still_scores_exactly(corpus):
    docs, queries = corpus
    index = MultiVectorIndex.from_vectors(docs, candidates_per_token=2)
    _, scores = exhaustive_top(docs, queries, 10)
    for qi, hits in enumerate(index.search(queries, k=10)):
        for h in hits:  # candidates may be missed, but every returned score is exact MaxSim
            assert h.score == pytest.approx(float(scores[qi, int(h.id)]), rel=1e-5)


@pytest.mark.parametrize(
    ("index_type", "storage", "min_recall"),
    [
        ("ivf", "fp32", 0.85),
        ("hnsw", "fp32", 0.95),
        ("flat", "fp16", 0.97),
        ("flat", "int8", 0.9),
        ("flat", "pq", 0.6),  # pq_m=8 below: 2 dims per code
        ("ivfpq", "pq", 0.3),  # 2 bytes per candidate vector on random data: coarse
    ],
)
def test_approximate_settings_recall(corpus, index_type, storage, min_recall):
    docs, queries = corpus
    index = MultiVectorIndex.from_vectors(docs, index_type=index_type, storage=storage, nprobe=8, pq_m=8)
    expected, _ = exhaustive_top(docs, queries, 10)
    assert recall(index.search(queries, k=10), expected) >= min_recall


@pytest.mark.parametrize(("index_type", "storage"), [("flat", "fp32"), ("hnsw", "int8")])
def test_add_overwrite_remove_get(rng, make_docs, index_type, storage):
    docs = make_docs(rng, 40, 8)
    index = MultiVectorIndex(8, index_type=index_type, storage=storage)
    index.add(docs, [f"d{i}" for i in range(40)], [{"i": i} for i in range(40)])
    n_tokens = sum(len(d) for d in docs)
    assert len(index) == 40 and index.num_vectors == n_tokens
    index.add([docs[7]], ["d0"], [{"copy": 7}])  # overwrite
    assert len(index) == 40 and index.num_vectors == n_tokens - len(docs[0]) + len(docs[7])
    (rec,) = index.get(["d0"])
    assert rec.metadata == {"copy": 7} and rec.vectors.shape == docs[7].shape
    np.testing.assert_allclose(rec.vectors, docs[7], atol=0.02)
    assert set(ids_of(index.search(docs[7], k=2)[0])) == {"d0", "d7"}
    assert index.remove(["d7", "d0", "ghost"]) == 2
    assert {"d0", "d7"}.isdisjoint(ids_of(index.search(docs[7], k=38)[0]))
    assert len(index.search(docs[7], k=100)[0]) == 38
    assert [r.id for r in index.get(["d1", "d0", "d2"])] == ["d1", "d2"]
    index.remove([f"d{i}" for i in range(40)])
    assert len(index) == 0 and index.search([docs[1]], k=3) == [[]]


def test_tombstones_with_hnsw_are_rebuilt(rng, make_docs):
    docs = make_docs(rng, 60, 8)
    index = MultiVectorIndex.from_vectors(docs, index_type="hnsw")
    index.remove([str(i) for i in range(55)])  # HNSW cannot remove: tombstones
    hits = index.search(docs[57], k=3)[0]
    assert len(hits) == 3 and hits[0].id == "57"
    index._rebuild()
    assert index._tombstones == 0 and index.search(docs[57], k=1)[0][0].id == "57"


def test_filters(corpus):
    docs, queries = corpus
    metas = [{"group": i % 3} for i in range(len(docs))]
    index = MultiVectorIndex.from_vectors(docs, metadatas=metas)
    members = [i for i in range(len(docs)) if i % 3 == 1]
    expected, _ = exhaustive_top([docs[i] for i in members], queries, 5)
    found = index.search(queries, k=5, filter={"group": 1})
    for hits, exp in zip(found, expected, strict=True):
        assert ids_of(hits) == [str(members[j]) for j in exp]
    # the candidate path with a filter (exact limit disabled) still only returns matches
    index.config["exact_filter_limit"] = 0
    for hits in index.search(queries, k=5, filter=lambda m: m["group"] == 2):
        assert len(hits) == 5 and all(h.metadata["group"] == 2 for h in hits)
    assert index.search(queries[:1], k=5, filter={"group": 7}) == [[]]


def test_padded_inputs_with_masks(rng, make_docs):
    docs = make_docs(rng, 20, 8)
    padded, mask = pad_token_vectors(docs)
    index = MultiVectorIndex(8)
    index.add(padded, doc_mask=mask)
    assert index.num_vectors == sum(len(d) for d in docs)
    q, qm = pad_token_vectors(docs[:3])
    by_padded = index.search(q, k=2, query_mask=qm)
    by_list = index.search([torch.from_numpy(d) for d in docs[:3]], k=2)
    assert [ids_of(h) for h in by_padded] == [ids_of(h) for h in by_list]
    assert [h[0].id for h in by_list] == ["0", "1", "2"]


def test_bad_inputs(rng, make_docs):
    index = MultiVectorIndex(8)
    with pytest.raises(ValueError, match=r"doc_vectors\[1\] has dimension 4"):
        index.add([np.ones((3, 8)), np.ones((3, 4))])
    with pytest.raises(ValueError, match=r"doc_vectors\[0\] has no token vectors"):
        index.add([np.zeros((0, 8))])
    with pytest.raises(ValueError, match="got 2 vectors but 3 ids"):
        index.add(make_docs(rng, 2, 8), ["a", "b", "c"])
    with pytest.raises(TypeError, match="list of"):
        index.add("text")
    index.add(make_docs(rng, 3, 8))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search([np.ones((2, 8))], k=-1)
    with pytest.raises(ValueError, match="queries is empty"):
        index.search([], k=1)
    with pytest.raises(ValueError, match=r"queries\[0\] has no token vectors"):
        index.search([np.zeros((0, 8))], k=1)
    with pytest.raises(ValueError, match="dimension 5"):
        index.search([np.ones((2, 5))], k=1)
    with pytest.raises(ValueError, match="storage must be one of"):
        MultiVectorIndex(8, storage="fp8")
    with pytest.raises(ValueError, match="at least 256 token vectors"):
        MultiVectorIndex(8, storage="pq").add([np.ones((5, 8))])
    assert len(index) == 3


def test_from_texts_with_colbert_encoder(fake_encoder):
    from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder

    # the fake model is context-free, so [MASK] augmentation would only add noise here
    enc = ColBERTEncoder(fake_encoder, ColBERTConfig(mask_augment=False))
    texts = ["the cat sat on the mat.", "dogs bark loudly!", "python lists and dicts", "cats?"]
    index = MultiVectorIndex.from_texts(texts, enc, batch_size=3)
    assert len(index) == 4 and index.model_name == "fake-token-encoder"
    assert index.search(enc.encode_queries(["dogs bark"]), k=1)[0][0].id == "1"
    assert index.search(enc.encode_queries(["python dicts"]), k=1)[0][0].id == "2"
    # a bad text is named by its position in the caller's list, not inside its batch
    with pytest.raises(TypeError, match=r"texts\[5\]: expected a string, got int"):
        MultiVectorIndex.from_texts([*texts, "ok", 7], enc, batch_size=3)
