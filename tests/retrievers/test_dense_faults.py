"""Faults of the dense (and, where they share the code, multi-vector) index: bad FAISS options,
training that fails or cannot happen, removing (nearly) everything, saving into folders that
hold other files, and vectors that float32 cannot hold. Results are compared with numpy
brute force or with FAISS itself."""

import hashlib
import json
import logging
import os

import faiss
import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, IndexFormatError, MultiVectorIndex, index_base
from vllm_pool.retrievers.arrays import l2_normalize
from vllm_pool.retrievers.persistence import version_folder


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def top_ids(docs, ids, queries, k):
    """Brute-force top-``k`` ids by cosine."""
    scores = unit(queries) @ unit(docs).T
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in scores]


def maxsim_top(docs, ids, query, k):
    """Brute-force MaxSim top-``k`` ids of one query ``[Lq, D]`` over stored ``[L_i, D]`` documents."""
    scores = [(unit(query) @ np.asarray(d, np.float64).T).max(axis=1).sum() for d in docs]
    return [ids[j] for j in np.argsort(-np.asarray(scores), kind="stable")[:k]]


def state(index):
    """What a failed call must leave as it was: ids, metadata, stored vectors, FAISS index."""
    records = index.get(index.ids())
    faiss_total = None if index._index is None else index._index.ntotal
    return [r.id for r in records], [r.metadata for r in records], [r.vectors for r in records], faiss_total


def assert_same_state(before, after):
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]
    for got, want in zip(after[2], before[2], strict=True):
        np.testing.assert_array_equal(got, want)


# -- 1. FAISS options are checked when the index is made -----------------------------------
BAD_OPTIONS = [
    ({"hnsw_m": 0}, ValueError, "hnsw_m must be an int >= 1"),
    ({"hnsw_m": -4}, ValueError, "hnsw_m must be an int >= 1"),
    ({"hnsw_m": True}, TypeError, "hnsw_m must be an int >= 1"),
    ({"nlist": 0}, ValueError, "nlist must be None or an int >= 1"),
    ({"nlist": -3}, ValueError, "nlist must be None or an int >= 1"),
    ({"nlist": 2.5}, TypeError, "nlist must be None or an int >= 1"),
    ({"nlist": False}, TypeError, "nlist must be None or an int >= 1"),
    ({"nprobe": 0}, ValueError, "nprobe must be an int >= 1"),
    ({"nprobe": -1}, ValueError, "nprobe must be an int >= 1"),
    ({"nprobe": 4.0}, TypeError, "nprobe must be an int >= 1"),
    ({"ef_search": 0}, ValueError, "ef_search must be an int >= 1"),
    ({"ef_search": "64"}, TypeError, "ef_search must be an int >= 1"),
]


@pytest.mark.parametrize("cls", [DenseIndex, MultiVectorIndex])
@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
@pytest.mark.parametrize(("options", "error", "message"), BAD_OPTIONS)
def test_bad_faiss_options_are_refused_by_the_constructor(cls, index_type, options, error, message):
    with pytest.raises(error, match=message):
        cls(8, index_type=index_type, **options)


@pytest.mark.parametrize("cls", [DenseIndex, MultiVectorIndex])
def test_good_faiss_options_are_taken(cls):
    index = cls(8, index_type="ivf", nlist=None, nprobe=1, hnsw_m=1, ef_search=1)
    assert index.config["nlist"] is None and index.config["hnsw_m"] == 1


# -- 2. training happens before an add changes anything --------------------------------------
def cannot_train(index_type, dim, train, *args, **kwargs):
    raise ValueError(f"could not train FAISS {index_type!r} on {len(train)} vectors")


def test_ivfpq_waits_for_enough_vectors_to_train(rng):
    """IVF-PQ's 8-bit codebooks need 256 vectors: with fewer the add stores them and searches
    are exact (once, the add raised after storing its documents)."""
    docs = rng.standard_normal((10, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(10)]
    index = DenseIndex(16, index_type="ivfpq", nlist=2)
    assert index.add(docs, ids) == ids
    assert len(index) == 10 and index._index is None
    queries = rng.standard_normal((3, 16))
    assert [[h.id for h in hits] for hits in index.search(queries, k=4)] == top_ids(docs, ids, queries, 4)
    more = rng.standard_normal((300, 16)).astype(np.float32)
    index.add(more)
    assert len(index) == 310 and faiss.try_extract_index_ivf(index._index) is not None
    assert index._index.ntotal == 310 and index._trained_on == 310


@pytest.mark.parametrize("index_type", ["ivf", "ivfpq"])
def test_a_failed_ivf_training_leaves_the_dense_index_unchanged(rng, monkeypatch, index_type):
    monkeypatch.setattr(DenseIndex, "min_train", 300)
    index = DenseIndex(16, index_type=index_type)
    index.add(rng.standard_normal((200, 16)), [f"d{i}" for i in range(200)], [{"i": i} for i in range(200)])
    before = state(index)

    monkeypatch.setattr(index_base, "build_index", cannot_train)
    new = rng.standard_normal((150, 16))
    new_ids = ["d0", "d1"] + [f"n{i}" for i in range(148)]  # two overwrite stored documents
    with pytest.raises(ValueError, match="could not train"):
        index.add(new, new_ids)
    assert_same_state(before, state(index))
    monkeypatch.undo()
    monkeypatch.setattr(DenseIndex, "min_train", 300)
    index.add(new, new_ids)  # the retry stores each document once, and trains on all of them
    assert len(index) == 348 and index._index.ntotal == 348 and index._trained_on == 348
    assert sorted(index.ids()) == sorted({*before[0], *new_ids})


def test_a_failed_ivf_training_leaves_the_multivector_index_unchanged(rng, make_docs, monkeypatch):
    monkeypatch.setattr(MultiVectorIndex, "min_train", 400)
    index = MultiVectorIndex(8, index_type="ivf")
    index.add(make_docs(rng, 20, 8, 10, 11), [f"d{i}" for i in range(20)])  # 200 tokens: exact
    before = state(index)
    monkeypatch.setattr(index_base, "build_index", cannot_train)
    with pytest.raises(ValueError, match="could not train"):
        index.add(make_docs(rng, 30, 8, 10, 11), ["d0", *[f"n{i}" for i in range(29)]])
    assert_same_state(before, state(index))
    assert index.num_vectors == 200


def test_a_factory_index_that_cannot_train_on_the_first_add_stores_nothing(rng):
    index = DenseIndex(16, index_type="IVF16,Flat")
    with pytest.raises(ValueError, match="could not train"):
        index.add(rng.standard_normal((5, 16)), [f"d{i}" for i in range(5)])
    assert len(index) == 0 and index.ids() == [] and index._index is None


# -- 3. the training count is saved -----------------------------------------------------------
def test_ivf_training_is_kept_across_save_and_load(rng, tmp_path, monkeypatch):
    monkeypatch.setattr(DenseIndex, "min_train", 200)
    index = DenseIndex.from_vectors(rng.standard_normal((240, 8)), index_type="ivf")
    index.add(rng.standard_normal((100, 8)))  # grows, still below 4x its training set
    assert index._trained_on == 240 and index._index.ntotal == 340
    index.save(tmp_path / "i")
    manifest = json.loads((version_folder(tmp_path / "i") / "manifest.json").read_text())
    assert manifest["trained_on"] == 240
    loaded = DenseIndex.load(tmp_path / "i")
    assert loaded._trained_on == 240 and loaded._tombstones == 0
    ivf = faiss.extract_index_ivf(loaded._index)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist).copy()
    loaded.add(rng.standard_normal((1, 8)))  # once, this re-trained the whole index
    ivf = faiss.extract_index_ivf(loaded._index)
    np.testing.assert_array_equal(ivf.quantizer.reconstruct_n(0, ivf.nlist), centroids)
    assert loaded._trained_on == 240 and loaded._index.ntotal == 341


def test_multivector_ivf_training_count_is_saved(rng, make_docs, tmp_path, monkeypatch):
    monkeypatch.setattr(MultiVectorIndex, "min_train", 100)
    index = MultiVectorIndex.from_vectors(make_docs(rng, 12, 8, 10, 11), index_type="ivf")
    index.add(make_docs(rng, 8, 8, 10, 11))
    assert index._trained_on == 120 and index._index.ntotal == 200
    index.save(tmp_path / "m")
    assert MultiVectorIndex.load(tmp_path / "m")._trained_on == 120


# -- 5. removing (nearly) everything, rebuilds that cannot train ------------------------------
@pytest.mark.parametrize("spec", ["HNSW32,SQ8", "hnsw"])
def test_removing_every_document_drops_the_faiss_index(rng, tmp_path, monkeypatch, spec):
    monkeypatch.setattr(DenseIndex, "rebuild_after", 10)
    index = DenseIndex(16, index_type=spec)
    index.add(rng.standard_normal((60, 16)))
    assert index.remove(index.ids()) == 60
    assert len(index) == 0 and index._index is None and index._tombstones == 0
    index.save(tmp_path / "empty")
    assert len(DenseIndex.load(tmp_path / "empty")) == 0
    docs = rng.standard_normal((12, 16)).astype(np.float32)
    ids = [f"n{i}" for i in range(12)]
    index.add(docs, ids)  # builds the FAISS index again, from these vectors
    assert index._index is not None and index._index.ntotal == 12
    queries = rng.standard_normal((4, 16))
    want = top_ids(docs, ids, queries, 3)
    assert [[h.id for h in hits] for hits in index.search(queries, k=3)] == want
    index.save(tmp_path / "again")
    loaded = DenseIndex.load(tmp_path / "again")
    assert [[h.id for h in hits] for hits in loaded.search(queries, k=3)] == want


def test_removing_every_document_of_a_multivector_sq8_hnsw_index(rng, make_docs, tmp_path, monkeypatch):
    monkeypatch.setattr(MultiVectorIndex, "rebuild_after", 10)
    index = MultiVectorIndex(8, index_type="hnsw", storage="int8")
    index.add(make_docs(rng, 20, 8))
    assert index.remove(index.ids()) == 20
    assert len(index) == 0 and index._index is None and index._tombstones == 0
    index.save(tmp_path / "m")
    assert len(MultiVectorIndex.load(tmp_path / "m")) == 0
    docs = make_docs(rng, 6, 8)
    ids = [f"n{i}" for i in range(6)]
    index.add(docs, ids)
    query = make_docs(rng, 1, 8)[0]
    want = maxsim_top([r.vectors for r in index.get(ids)], ids, query, 3)
    assert [h.id for h in index.search(query, k=3)[0]] == want


def test_a_rebuild_too_small_to_train_keeps_the_index_and_its_tombstones(rng, tmp_path, monkeypatch, caplog):
    """``HNSW16,PQ4x4`` needs 16 vectors to train: with 5 live ones the rebuild keeps the
    current index (searches skip the removed documents) instead of failing half-way."""
    monkeypatch.setattr(DenseIndex, "rebuild_after", 10)
    docs = rng.standard_normal((100, 16)).astype(np.float32)
    ids = [str(i) for i in range(100)]
    index = DenseIndex(16, index_type="HNSW16,PQ4x4")
    index.add(docs, ids)
    with caplog.at_level(logging.WARNING, logger="vllm_pool.retrievers.index_base"):
        assert index.remove(ids[:95]) == 95
    assert "keeping the current one" in caplog.text
    assert len(index) == 5 and index._tombstones == 95 and index._index.ntotal == 100
    hits = index.search(docs[97], k=10)[0]
    assert sorted(h.id for h in hits) == ids[95:]
    index.save(tmp_path / "i")  # once, save re-trained on the 5 live vectors and failed
    loaded = DenseIndex.load(tmp_path / "i")
    assert loaded.ids() == ids[95:] and loaded._tombstones == 95
    assert sorted(h.id for h in loaded.search(docs[97], k=10)[0]) == ids[95:]
    loaded.add(docs[:3], ["a", "b", "c"])  # the kept index still takes new documents
    assert len(loaded) == 8 and {"a", "b", "c"} <= {h.id for h in loaded.search(docs[0], k=8)[0]}


@pytest.mark.parametrize(
    ("label", "pattern"),
    [(0, r"index\.faiss: the FAISS labels do not match docs\.json"), (10**6, r"outside the slots")],
)
def test_saved_ivf_labels_are_checked(rng, tmp_path, monkeypatch, label, pattern):
    """More FAISS vectors than documents load as tombstones, so their labels are checked: an
    IVF index's inverted lists may not repeat a live slot nor hold one a later add would take."""
    monkeypatch.setattr(DenseIndex, "min_train", 50)
    DenseIndex.from_vectors(rng.standard_normal((60, 8)), index_type="ivf").save(tmp_path / "i")
    live = version_folder(tmp_path / "i")
    crafted = faiss.read_index(str(live / "index.faiss"))
    crafted.add_with_ids(rng.standard_normal((1, 8)).astype(np.float32), np.array([label], np.int64))
    faiss.write_index(crafted, str(live / "index.faiss"))
    manifest = json.loads((live / "manifest.json").read_text())
    data = (live / "index.faiss").read_bytes()
    manifest["files"]["index.faiss"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (live / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=pattern):
        DenseIndex.load(tmp_path / "i")


# -- 4. a folder that holds another tool's files -----------------------------------------------
def test_save_leaves_another_tools_manifest_and_files_alone(rng, tmp_path):
    folder = tmp_path / "ext"
    folder.mkdir()
    foreign = {"name": "my web extension", "files": {"settings.json": {}, "data.npy": {}}}
    (folder / "manifest.json").write_text(json.dumps(foreign))
    (folder / "settings.json").write_text(json.dumps({"user": "precious"}))
    np.save(folder / "data.npy", np.arange(3))
    docs = rng.standard_normal((8, 4)).astype(np.float32)
    index = DenseIndex.from_vectors(docs)
    for _ in range(2):  # a second save (with a pointer now) must not take it for the flat layout
        index.save(folder)
        assert json.loads((folder / "manifest.json").read_text()) == foreign
        assert json.loads((folder / "settings.json").read_text()) == {"user": "precious"}
        np.testing.assert_array_equal(np.load(folder / "data.npy"), np.arange(3))
        loaded = DenseIndex.load(folder)
        assert loaded.ids() == index.ids()
        assert [h.id for h in loaded.search(docs[2], k=1)[0]] == ["2"]
    os.remove(folder / "CURRENT")  # pointer lost: the newest version is the index, not the manifest
    assert DenseIndex.load(folder).ids() == index.ids()
    index.save(folder)
    assert (folder / "manifest.json").exists() and len(DenseIndex.load(folder)) == 8


def test_the_flat_layout_of_this_library_is_still_converted(rng, tmp_path):
    src = tmp_path / "src"
    DenseIndex.from_vectors(rng.standard_normal((5, 4))).save(src)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in os.listdir(version_folder(src)):
        (flat / name).write_bytes((version_folder(src) / name).read_bytes())
    index = DenseIndex.load(flat)
    assert version_folder(flat) == flat and len(index) == 5
    index.save(flat)
    assert sorted(os.listdir(flat)) == sorted([".lock", "CURRENT", version_folder(flat).name])


# -- 6. vectors float32 cannot hold ---------------------------------------------------------------
def test_values_that_overflow_float32_are_refused_naming_the_row(rng):
    index = DenseIndex(4)
    index.add(rng.standard_normal((2, 4)), ["a", "b"])
    before = state(index)
    vectors = np.array([[0, 1.0, 0, 0], [1e39, 0, 0, 0]], dtype=np.float64)
    with pytest.raises(ValueError, match=r"vectors\[1\] contains NaN or infinite values as float32"):
        index.add(vectors, ["c", "d"])
    assert_same_state(before, state(index))
    with pytest.raises(ValueError, match=r"query_vectors\[0\]"):
        index.search(np.array([-1e39, 0, 0, 0]), k=1)
    with pytest.raises(ValueError, match=r"doc_vectors\[1\]\[0\] contains NaN"):
        MultiVectorIndex(4).add([np.ones((2, 4)), np.array([[np.inf, 0, 0, 0]])])


def test_vectors_whose_squares_overflow_float32_are_normalized(rng):
    vectors = np.array([[1e20, 1e20, 0, 0], [0, 3e-30, 4e-30, 0], [0, 0, 0, 2.0]], dtype=np.float64)
    index = DenseIndex(4)
    index.add(vectors, ["big", "tiny", "plain"])
    for record, want in zip(index.get(["big", "tiny", "plain"]), unit(vectors), strict=True):
        np.testing.assert_allclose(record.vectors, want, rtol=1e-6)
    hits = index.search(np.array([3e20, 3e20, 0, 0]), k=3)[0]
    assert hits[0].id == "big" and hits[0].score == pytest.approx(1.0, abs=1e-6)
    x = rng.standard_normal((50, 8)).astype(np.float32) * np.float32(1e19)
    np.testing.assert_allclose(l2_normalize(x), unit(x), rtol=1e-6, atol=1e-7)
    assert l2_normalize(x).dtype == np.float32
    np.testing.assert_array_equal(l2_normalize(np.zeros((2, 3), np.float32)), np.zeros((2, 3)))
