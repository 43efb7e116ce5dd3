"""``VllmPoolVectorStore`` checks what it is given before it embeds anything and keeps its
scores consistent: a euclidean / manhattan search is one snapshot of the index while another
thread deletes or overwrites; bad options (LangChain FAISS's, unknown names, bad values) raise
before the corpus is embedded; vectors normalized otherwise than the similarity needs (a
loaded store, ``index=``, ``normalize=``) are refused instead of scored wrongly."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from vllm_pool.integrations.langchain import VllmPoolVectorStore
from vllm_pool.retrievers import DenseIndex

DIM = 8
RNG = np.random.default_rng(7)
TEXTS = [f"text {i}" for i in range(12)]
VECTORS = {t: (RNG.normal(size=DIM) * RNG.uniform(0.5, 3.0)).tolist() for t in TEXTS}  # not normalized


class Table(Embeddings):
    """Fixed vectors per text; counts the documents embedded; ``similarity_fn_name`` when given."""

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.similarity_fn_name = name
        self.embedded = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded += len(texts)
        return [VECTORS.get(t) or np.random.default_rng(len(t)).normal(size=DIM).tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return VECTORS.get(text) or np.random.default_rng(len(text)).normal(size=DIM).tolist()


def reference(name: str, query: list[float], vectors: list[list[float]]) -> np.ndarray:
    """Sentence Transformers' similarity functions, as numpy."""
    q, m = np.asarray(query), np.asarray(vectors)
    if name == "cosine":
        return (m / np.linalg.norm(m, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    if name == "dot":
        return m @ q
    if name == "euclidean":
        return -np.sqrt(((m - q) ** 2).sum(1))
    return -np.abs(m - q).sum(1)


# -- a distance search under a concurrent delete / overwrite (bug: KeyError, mixed pairs) ---------
@pytest.mark.parametrize("name", ["euclidean", "manhattan"])
@pytest.mark.parametrize("change", ["delete", "overwrite"])
def test_a_distance_search_is_one_snapshot_while_another_thread_writes(name, change, monkeypatch):
    store = VllmPoolVectorStore.from_texts(TEXTS, Table(name), ids=TEXTS)
    query = VECTORS[TEXTS[3]]
    expected = np.argsort(-reference(name, query, [VECTORS[t] for t in TEXTS]))[:4]
    new_vector = (-np.asarray(query)).tolist()  # far from the query
    search = store.index.search
    writers: list[threading.Thread] = []

    def write() -> None:
        store.delete([TEXTS[3]])
        if change == "overwrite":
            store.add_embeddings([("replaced", new_vector)], ids=[TEXTS[3]])

    def search_then_write(*args, **kwargs):
        hits = search(*args, **kwargs)
        writer = threading.Thread(target=write)
        writers.append(writer)
        writer.start()
        writer.join(1.0)  # on the old code the write lands between the search and the lookup
        return hits

    monkeypatch.setattr(store.index, "search", search_then_write)
    found = store.similarity_search_with_score_by_vector(query, k=4)
    for writer in writers:
        writer.join()
    monkeypatch.undo()
    # the snapshot before the write: every text with the score of its own vector
    assert [d.id for d, _ in found] == [TEXTS[i] for i in expected]
    texts = [d.page_content for d, _ in found]
    np.testing.assert_allclose(
        [s for _, s in found], reference(name, query, [VECTORS[t] for t in texts]), rtol=1e-5
    )
    # and the write happened once the search was done
    after = {d.id: d.page_content for d in store.get_by_ids([TEXTS[3]])}
    assert after == ({} if change == "delete" else {TEXTS[3]: "replaced"})


# -- options checked before the corpus is embedded -------------------------------------------------
FAISS_NAMES = [
    ("distance_strategy", "MAX_INNER_PRODUCT", "similarity_fn_name"),
    ("normalize_L2", True, "L2-normalized exactly when the similarity"),
    ("relevance_score_fn", lambda s: s, "_select_relevance_score_fn"),
]


@pytest.mark.parametrize(("option", "value", "hint"), FAISS_NAMES)
def test_langchain_faiss_options_say_what_to_do_here(option, value, hint):
    emb = Table("dot")
    with pytest.raises(ValueError, match=rf"{option}= is an option of LangChain's FAISS.*{hint}") as err:
        VllmPoolVectorStore.from_texts(TEXTS, emb, **{option: value})
    assert emb.embedded == 0
    if option != "relevance_score_fn":
        assert "'dot'" in str(err.value)  # the similarity these embeddings give


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"nprobe": 0}, ValueError),
        ({"hnsw_m": True}, TypeError),
        ({"storage": "int4"}, ValueError),
        ({"storage": "int8", "index_type": "hnsw"}, ValueError),
        ({"rescore": "exact", "storage": "binary"}, ValueError),
        ({"calibration_embeddings": [1.0, 2.0], "storage": "int8"}, ValueError),
    ],
)
def test_bad_values_raise_the_index_s_own_error_before_embedding(options, error):
    with pytest.raises(error) as own:
        DenseIndex(DIM, **options)
    emb = Table()
    for build in (
        lambda: VllmPoolVectorStore.from_texts(TEXTS, emb, **options),
        lambda: VllmPoolVectorStore.from_embeddings(list(VECTORS.items()), emb, **options),
    ):
        with pytest.raises(error) as ours:
            build()
        assert str(ours.value) == str(own.value)
    assert emb.embedded == 0


def test_unknown_names_and_unparsable_index_types_raise_before_embedding():
    emb = Table()
    with pytest.raises(
        TypeError, match=r"VllmPoolVectorStore got an unknown option 'nprob'; did you mean nprobe"
    ):
        VllmPoolVectorStore.from_texts(TEXTS, emb, nprob=4)
    with pytest.raises(TypeError, match=r"unknown option 'colour'; the options are \[.*'storage'"):
        VllmPoolVectorStore(emb, colour="red")
    with pytest.raises(
        ValueError, match=r"index_type must be 'flat', .*got 'bogus' \(FAISS: could not parse"
    ):
        VllmPoolVectorStore.from_texts(TEXTS, emb, index_type="bogus")
    with pytest.raises(TypeError, match="index_type must be"):
        VllmPoolVectorStore.from_texts(TEXTS, emb, index_type=None)
    assert emb.embedded == 0
    with pytest.raises(ValueError, match="bad FAISS index type 'bogus'"):  # what the old code raised late
        DenseIndex(DIM, index_type="bogus").add(np.ones((1, DIM)))


def test_good_options_still_build_the_index_they_name():
    emb = Table()
    for options in ({"index_type": "HNSW", "ef_search": 64}, {"index_type": "IDMap,Flat"},
                    {"storage": "int8", "rescore_multiplier": 2}, {"nlist": 2, "index_type": "ivf"},
                    {"normalize": True, "model_name": "mine"}):  # fmt: skip
        store = VllmPoolVectorStore.from_texts(TEXTS, emb, ids=TEXTS, **options)
        assert all(store.index.config.get(k, getattr(store.index, k, None)) == v for k, v in options.items())
        assert store.similarity_search(TEXTS[5], k=1)[0].id == TEXTS[5]


# -- vectors normalized otherwise than the similarity needs --------------------------------------
@pytest.mark.parametrize(("name", "normalize"), [("cosine", False), ("dot", True), ("euclidean", True)])
def test_normalize_that_contradicts_the_similarity_is_refused(name, normalize):
    emb = Table(name if name != "cosine" else None)
    with pytest.raises(ValueError, match=rf"normalize={normalize} .*similarity '{name}'.*need normalize="):
        VllmPoolVectorStore.from_texts(TEXTS, emb, normalize=normalize)
    with pytest.raises(
        ValueError, match=rf"\(normalize={normalize}\) with embeddings of similarity '{name}'"
    ):
        VllmPoolVectorStore(emb, index=DenseIndex(DIM, normalize=normalize))
    assert emb.embedded == 0
    with pytest.raises(TypeError, match="normalize must be True or False"):
        VllmPoolVectorStore(emb, normalize="yes")


def test_a_store_loads_only_with_embeddings_of_its_kind_of_vectors(tmp_path):
    VllmPoolVectorStore.from_texts(TEXTS, Table("dot"), ids=TEXTS).save_local(tmp_path / "dot")
    VllmPoolVectorStore.from_texts(TEXTS, Table(), ids=TEXTS).save_local(tmp_path / "cos")
    with pytest.raises(
        ValueError, match=r"dot.*cannot use an index of 8-d vectors \(normalize=False\).*'cosine'"
    ):
        VllmPoolVectorStore.load_local(tmp_path / "dot", Table())  # e.g. HuggingFaceEmbeddings
    with pytest.raises(ValueError, match=r"cos.*\(normalize=True\) with embeddings of similarity 'dot'"):
        VllmPoolVectorStore.load_local(tmp_path / "cos", Table("dot"))
    # raw vectors serve dot and the distances alike: the scores are the reference's
    query = VECTORS[TEXTS[0]]
    for folder, name in (("dot", "dot"), ("dot", "euclidean"), ("cos", "cosine")):
        loaded = VllmPoolVectorStore.load_local(tmp_path / folder, Table(None if name == "cosine" else name))
        found = loaded.similarity_search_with_score_by_vector(query, k=len(TEXTS))
        want = reference(name, query, [VECTORS[t] for t in TEXTS])
        assert [d.id for d, _ in found] == [TEXTS[i] for i in np.argsort(-want)]
        np.testing.assert_allclose([s for _, s in found], np.sort(want)[::-1], rtol=1e-5)
