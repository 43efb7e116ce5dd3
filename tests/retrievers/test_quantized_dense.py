"""int8 / binary dense indexes against Sentence Transformers' quantize_embeddings and
semantic_search_faiss on the same vectors."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss
from vllm_pool.retrievers import DenseIndex


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((8, 48)).astype(np.float32)
    x = centers[rng.integers(0, 8, 300)] + 0.7 * rng.standard_normal((300, 48)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:6] + 0.2 * rng.standard_normal((6, 48)).astype(np.float32)
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


def test_codes_are_sentence_transformers_codes(data):
    x, _ = data
    binary = DenseIndex.from_vectors(x, storage="binary")
    np.testing.assert_array_equal(binary._vectors[: len(x)], quantize_embeddings(x, "ubinary"))
    assert binary._vectors.dtype == np.uint8 and binary._vectors.shape[1] == 48 // 8  # 1/32 of fp32
    int8 = DenseIndex.from_vectors(x, storage="int8", normalize=False)  # x is unit already: same floats
    ranges = np.vstack([x.min(0), x.max(0)])
    np.testing.assert_array_equal(int8._vectors[: len(x)], quantize_embeddings(x, "int8", ranges=ranges))
    np.testing.assert_array_equal(int8._ranges, ranges)


@pytest.mark.parametrize("storage", ["int8", "binary"])
def test_search_rescores_as_semantic_search_faiss(data, storage):
    x, q = data
    k, n = 5, len(x)
    ranges = np.vstack([x.min(0), x.max(0)])
    precision = {"int8": "uint8", "binary": "ubinary"}[storage]
    corpus = quantize_embeddings(x, precision, ranges=ranges)
    # rescore_multiplier large enough that every document is a candidate: the rescoring alone decides
    ref, _ = semantic_search_faiss(
        q, corpus_embeddings=corpus, corpus_precision=precision, top_k=k, ranges=ranges, rescore_multiplier=n
    )
    ours = DenseIndex.from_vectors(x, storage=storage, rescore_multiplier=n).search(q, k=k)
    for qi, (r, o) in enumerate(zip(ref, ours)):
        assert [h.id for h in o] == [str(hit["corpus_id"]) for hit in r]
        st_scores = np.array([hit["score"] for hit in r])
        if storage == "binary":  # ST scores q . bits; ours q . (2 bits - 1) / sqrt(D): same order
            st_scores = (2 * st_scores - q[qi].sum()) / np.sqrt(x.shape[1])
        np.testing.assert_allclose([h.score for h in o], st_scores, rtol=1e-4, atol=1e-5)
    # the usual multiplier: candidates from the codes first
    truth = [{h.id for h in hits} for hits in DenseIndex.from_vectors(x).search(q, k=k)]
    ref4, _ = semantic_search_faiss(
        q, corpus_embeddings=corpus, corpus_precision=precision, top_k=k, ranges=ranges, rescore_multiplier=4
    )
    found = DenseIndex.from_vectors(x, storage=storage, rescore_multiplier=4).search(q, k=k)

    def recall(results):
        return np.mean([len(t & set(r)) / k for t, r in zip(truth, results)])

    ours4 = [[h.id for h in f] for f in found]
    st4 = [[str(hit["corpus_id"]) for hit in r] for r in ref4]
    if storage == "binary":  # the same Hamming candidates (FAISS's kernel), the same rescoring
        assert ours4 == st4
    else:  # int8 candidates rank by the exact dequantized score: at least ST's recall
        assert recall(ours4) >= recall(st4) and recall(ours4) == 1.0


@pytest.mark.parametrize("storage", ["int8", "binary"])
def test_float_rescoring_from_disk_is_exact(data, storage):
    x, q = data
    exact = DenseIndex.from_vectors(x).search(q, k=8)
    index = DenseIndex.from_vectors(x, storage=storage, rescore="float", rescore_multiplier=len(x))
    assert isinstance(index._floats._rows, np.memmap)  # the float rows are a file, not memory
    got = index.search(q, k=8)
    assert [[h.id for h in hits] for hits in got] == [[h.id for h in hits] for hits in exact]
    scores = [h.score for hits in got for h in hits]
    np.testing.assert_allclose(scores, [h.score for hits in exact for h in hits], atol=1e-5)
    # the usual multiplier: exact scores of the candidates, recall >= the codes' rescoring
    truth = [{h.id for h in hits} for hits in exact]

    def recall(ix):
        return np.mean([len(t & {h.id for h in f}) / 8 for t, f in zip(truth, ix.search(q, k=8))])

    floats = DenseIndex.from_vectors(x, storage=storage, rescore="float", rescore_multiplier=4)
    assert recall(floats) >= recall(DenseIndex.from_vectors(x, storage=storage, rescore_multiplier=4))
    np.testing.assert_array_equal(floats.get(["3"])[0].vectors, x[3] / np.linalg.norm(x[3]))


@pytest.mark.parametrize(
    ("storage", "rescore"), [("int8", "codes"), ("binary", "codes"), ("binary", "float")]
)
def test_filters_deletes_overwrites_and_persistence(data, storage, rescore, tmp_path):
    x, q = data
    metas = [{"g": i % 3} for i in range(len(x))]
    index = DenseIndex.from_vectors(
        x, storage=storage, metadatas=metas, rescore_multiplier=1000, rescore=rescore
    )
    decoded = np.stack([r.vectors for r in index.get(index.ids())])
    hits = index.search(q[0], k=10, filter={"g": {"$in": [1, 2]}})[0]
    allowed = [i for i in range(len(x)) if metas[i]["g"] in (1, 2)]
    exact = sorted(allowed, key=lambda i: -float(decoded[i] @ q[0]))[:10]
    assert [h.id for h in hits] == [str(i) for i in exact]
    assert index.remove([str(i) for i in exact[:3]]) == 3
    assert {h.id for h in index.search(q[0], k=10, filter={"g": {"$in": [1, 2]}})[0]}.isdisjoint(
        str(i) for i in exact[:3]
    )
    index.add(x[:1] * -1, ids=["5"])  # overwrite with the opposite vector
    assert index.search(-x[0], k=1)[0][0].id == "5"
    index.add(x[:200], ids=[f"n{i}" for i in range(200)])  # grows, compacting the garbage rows
    assert index.remove([f"n{i}" for i in range(200)]) == 200
    index.save(tmp_path / "q")
    loaded = DenseIndex.load(tmp_path / "q")
    assert loaded.config["storage"] == storage and len(loaded) == len(index)
    assert loaded.search(q, k=7) == index.search(q, k=7)
    np.testing.assert_array_equal(loaded.get(["5"])[0].vectors, index.get(["5"])[0].vectors)
    names = {p.name for p in (tmp_path / "q").rglob("*.npy")}
    assert "codes.npy" in names and ("vectors.npy" in names) == (rescore == "float")


def test_bad_settings_and_failed_first_add_change_nothing(data):
    x, _ = data
    with pytest.raises(ValueError, match="index_type='flat'"):
        DenseIndex(48, index_type="hnsw", storage="binary")
    with pytest.raises(ValueError, match="storage must be one of"):
        DenseIndex(48, storage="int4")
    with pytest.raises(ValueError, match="rescore_multiplier"):
        DenseIndex(48, storage="binary", rescore_multiplier=0)
    with pytest.raises(ValueError, match="rescore must be"):
        DenseIndex(48, storage="binary", rescore="fp32")
    index = DenseIndex(48, storage="int8")
    with pytest.raises(ValueError, match="at least 2 vectors"):
        index.add(x[:1])
    assert len(index) == 0 and index._ranges is None
    index.add(x[:50])
    assert len(index) == 50
    calibrated = DenseIndex(48, storage="int8", calibration_embeddings=x)
    calibrated.add(x[:1])  # ranges from the calibration set: one vector is fine
    np.testing.assert_allclose(calibrated.get(["0"])[0].vectors, x[0], atol=2 * (x.max() - x.min()) / 255)


def test_vector_store_with_binary_storage(tmp_path):
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from vllm_pool.integrations.langchain import VllmPoolVectorStore

    fake = DeterministicFakeEmbedding(size=64)
    texts = [f"text number {i}" for i in range(40)]
    store = VllmPoolVectorStore.from_texts(texts, fake, storage="binary", rescore_multiplier=40)
    assert store.index.config["storage"] == "binary"
    exact = VllmPoolVectorStore.from_texts(texts, fake)
    top = store.similarity_search("text number 3", k=1)
    assert top[0].page_content == "text number 3"
    assert exact.similarity_search("text number 3", k=1)[0].page_content == "text number 3"
    store.save_local(tmp_path)
    loaded = VllmPoolVectorStore.load_local(tmp_path, fake)
    assert loaded.index.config["storage"] == "binary"
    q = "text 7"
    assert loaded.similarity_search_with_score(q, k=3) == store.similarity_search_with_score(q, k=3)
