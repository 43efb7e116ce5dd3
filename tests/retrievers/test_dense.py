import numpy as np
import pytest
import torch
from vllm_pool.retrievers import DenseIndex, Hit


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(docs, queries, k):
    scores = normalized(queries) @ normalized(docs).T
    return [list(np.argsort(-row, kind="stable")[:k]) for row in scores]


@pytest.fixture
def data(rng):
    return rng.standard_normal((500, 32)).astype(np.float32), rng.standard_normal((20, 32))


def ids_of(hits):
    return [h.id for h in hits]


def test_flat_equals_brute_force(data):
    docs, queries = data
    index = DenseIndex.from_vectors(docs, [f"d{i}" for i in range(len(docs))])
    assert len(index) == 500
    results = index.search(queries, k=10)
    for hits, expected in zip(results, brute_force(docs, queries, 10), strict=True):
        assert ids_of(hits) == [f"d{i}" for i in expected]
        assert all(isinstance(h, Hit) for h in hits)
        assert hits[0].score >= hits[-1].score


@pytest.mark.parametrize(("index_type", "min_recall"), [("hnsw", 0.9), ("ivf", 0.8)])
def test_approximate_recall(data, index_type, min_recall):
    docs, queries = data
    index = DenseIndex.from_vectors(docs, index_type=index_type, nprobe=8)
    found = index.search(queries, k=10)
    recall = np.mean(
        [
            len(set(ids_of(h)) & {str(i) for i in e}) / 10
            for h, e in zip(found, brute_force(docs, queries, 10), strict=True)
        ]
    )
    assert recall >= min_recall


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_add_overwrite_remove_get(rng, index_type):
    vecs = normalized(rng.standard_normal((100, 8)).astype(np.float32))
    index = DenseIndex(8, index_type=index_type, nprobe=100)
    index.add(vecs, [f"d{i}" for i in range(100)], [{"i": i, "even": i % 2 == 0} for i in range(100)])
    # overwrite d0 with d50's vector and new metadata
    index.add(vecs[50:51], ["d0"], [{"new": True}])
    assert len(index) == 100
    (rec,) = index.get(["d0"])
    assert rec.metadata == {"new": True}
    np.testing.assert_allclose(rec.vectors, vecs[50], rtol=1e-6)
    top2 = ids_of(index.search(vecs[50], k=2)[0])
    assert set(top2) == {"d0", "d50"}
    # remove (missing ids ignored)
    assert index.remove(["d50", "nope"]) == 1
    assert "d50" not in index and len(index) == 99
    assert ids_of(index.search(vecs[50], k=1)[0]) == ["d0"]
    assert [r.id for r in index.get(["d1", "missing", "d2"])] == ["d1", "d2"]
    # removing everything, then searching, then adding again
    index.remove([f"d{i}" for i in range(100)])
    assert len(index) == 0 and index.search(vecs[:2], k=3) == [[], []]
    index.add(vecs[:3], ["a", "b", "c"])
    assert ids_of(index.search(vecs[1], k=1)[0]) == ["b"]


def test_filters(rng):
    vecs = rng.standard_normal((200, 8)).astype(np.float32)
    metas = [{"color": ["red", "blue"][i % 2], "n": i} for i in range(200)]
    index = DenseIndex.from_vectors(vecs, metadatas=metas)
    q = rng.standard_normal((3, 8))
    for hits in index.search(q, k=5, filter={"color": "red"}):
        assert len(hits) == 5 and all(h.metadata["color"] == "red" for h in hits)
    # filtered exact path equals brute force restricted to matching docs
    red = [i for i in range(200) if i % 2 == 0]
    expected = brute_force(vecs[red], q, 5)
    for hits, exp in zip(index.search(q, 5, filter={"color": "red"}), expected, strict=True):
        assert ids_of(hits) == [str(red[j]) for j in exp]
    hits = index.search(q[0], k=50, filter=lambda m: m["n"] < 3)[0]
    assert sorted(ids_of(hits)) == ["0", "1", "2"]
    assert index.search(q, k=5, filter={"color": "green"}) == [[], [], []]
    assert index.search(q, k=5, filter={"missing": 1}) == [[], [], []]
    # the FAISS path (oversampling) when the exact limit is low
    index.config["exact_filter_limit"] = 0
    for hits in index.search(q, k=5, filter={"color": "blue"}):
        assert len(hits) == 5 and all(h.metadata["color"] == "blue" for h in hits)


def test_metadata_is_copied(rng):
    meta = {"tags": ["a"]}
    index = DenseIndex.from_vectors(rng.standard_normal((2, 4)), ["x", "y"], [meta, {}])
    meta["tags"].append("b")
    hit = index.search(np.ones(4), k=2)[0][0]
    hit.metadata["tags"] = "changed"
    assert index.get(["x"])[0].metadata == {"tags": ["a"]}


def test_torch_and_list_inputs(rng):
    index = DenseIndex(4)
    index.add(torch.randn(3, 4), ["a", "b", "c"])
    index.add([[1.0, 0.0, 0.0, 0.0]], ["e"])
    assert ids_of(index.search(torch.tensor([[1.0, 0, 0, 0]]), k=1)[0]) == ["e"]


def test_bad_inputs(rng):
    index = DenseIndex(4)
    with pytest.raises(ValueError, match="dimension 5, index dimension is 4"):
        index.add(np.zeros((2, 5)), ["a", "b"])
    with pytest.raises(ValueError, match="got 2 vectors but 1 ids"):
        index.add(np.ones((2, 4)), ["a"])
    with pytest.raises(ValueError, match="metadatas"):
        index.add(np.ones((2, 4)), ["a", "b"], [{}])
    with pytest.raises(TypeError, match="ids must be strings"):
        index.add(np.ones((1, 4)), [1])
    with pytest.raises(ValueError, match="unique"):
        index.add(np.ones((2, 4)), ["a", "a"])
    with pytest.raises(TypeError, match="metadata must be a dict"):
        index.add(np.ones((1, 4)), ["a"], ["meta"])
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 4), np.nan), ["a"])
    with pytest.raises(ValueError, match="2-D"):
        index.add(np.ones((2, 2, 4)))
    index.add(np.ones((1, 4)), ["a"])
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.ones((1, 4)), k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        index.search(np.ones((1, 4)), k=1.5)
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((0, 4)), k=1)
    with pytest.raises(ValueError, match="dimension 3"):
        index.search(np.ones((1, 3)), k=1)
    with pytest.raises(TypeError, match="filter"):
        index.search(np.ones((1, 4)), k=1, filter="color")
    with pytest.raises(TypeError, match="single string"):
        index.remove("a")
    with pytest.raises(ValueError, match="dim must be a positive int"):
        DenseIndex(0)
    with pytest.raises(ValueError, match="bad FAISS index type"):
        DenseIndex(4, index_type="NotAnIndex").add(np.ones((1, 4)))
    assert len(index) == 1  # failed calls left the index usable


def test_from_texts_uses_embedder():
    class Embedder:
        model_name = "fake-embedder"

        def __init__(self):
            self.calls = 0

        def embed_texts(self, texts):
            self.calls += 1
            return np.asarray([[len(t), 1.0, t.count("a"), 0.5] for t in texts], np.float32)

    emb = Embedder()
    texts = ["a", "bb", "aaa", "cccc", "dd"]
    index = DenseIndex.from_texts(texts, emb, batch_size=2)
    assert emb.calls == 3 and len(index) == 5 and index.model_name == "fake-embedder"
    assert index.search(emb.embed_texts(["aaa"]), k=1)[0][0].id == "2"
    with pytest.raises(ValueError, match="non-empty"):
        DenseIndex.from_texts([], emb)


def test_from_texts_errors_name_the_callers_position(default_llm):
    from vllm_pool.retrievers import EngineTextEmbedder

    texts = [f"text {i}" for i in range(7)]
    texts[5] = "bad \ud800"  # third batch of 2, position 1 inside it
    with pytest.raises(ValueError, match=r"texts\[5\] is not valid Unicode"):
        DenseIndex.from_texts(texts, EngineTextEmbedder(default_llm), batch_size=2)
    with pytest.raises(TypeError, match="single string"):
        DenseIndex.from_texts("hello", EngineTextEmbedder(default_llm))
    texts[5] = ""  # a blank page embeds ([CLS] [SEP])
    assert len(DenseIndex.from_texts(texts, EngineTextEmbedder(default_llm), batch_size=2)) == 7


def test_lossy_codes_are_refined_to_exact_scores():
    """An index of PQ / SQ codes returns exact scores (its candidates scored on the stored
    vectors, as FAISS's IndexRefineFlat) and the exact answer's documents; before, the PQ
    scores themselves (off by up to 0.12) and recall@10 about 0.6."""
    from vllm_pool.retrievers.faiss_index import lossy_codes

    assert lossy_codes("ivfpq") and lossy_codes("IVF64,PQ8") and lossy_codes("HNSW32,SQ8")
    assert not lossy_codes("ivf") and not lossy_codes("hnsw") and not lossy_codes("IVF64,PQ8,RFlat")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((32, 64)).astype(np.float32)
    x = centers[rng.integers(0, 32, 3000)] + 0.5 * rng.standard_normal((3000, 64)).astype(np.float32)
    ids = [str(i) for i in range(len(x))]
    queries = x[:40] + 0.3 * rng.standard_normal((40, 64)).astype(np.float32)
    exact = DenseIndex(64)
    exact.add(x, ids)
    want = exact.search(queries, k=10)
    for index_type in ("ivfpq", "IVF32,SQ8"):
        index = DenseIndex(64, index_type=index_type, nprobe=32)
        index.add(x, ids)
        got = index.search(queries, k=10)
        recall = np.mean([len({h.id for h in g} & {h.id for h in w}) / 10 for g, w in zip(got, want)])
        assert recall >= 0.95, (index_type, recall)
        vectors = {r.id: r.vectors for r in index.get(ids)}
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        for qi, hits in enumerate(got):
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            np.testing.assert_allclose(scores, [vectors[h.id] @ q[qi] for h in hits], atol=1e-5)
