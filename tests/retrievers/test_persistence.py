import json
import os

import numpy as np
import pytest
import vllm_pool.retrievers.persistence as persistence
from vllm_pool.retrievers import DenseIndex, IndexFormatError, MultiVectorIndex


def hits_as_tuples(results):
    return [[(h.id, round(h.score, 5), json.dumps(h.metadata)) for h in r] for r in results]


@pytest.fixture
def dense(rng):
    vecs = rng.standard_normal((50, 8)).astype(np.float32)
    idx = DenseIndex.from_vectors(
        vecs, [f"d{i}" for i in range(50)], [{"i": i, "tag": "é"} for i in range(50)], model_name="m"
    )
    idx.remove(["d3"])
    return idx


@pytest.fixture
def multi(rng, make_docs):
    docs = make_docs(rng, 60, 8)  # HNSW: the folder holds a FAISS file too
    return MultiVectorIndex.from_vectors(docs, index_type="hnsw", metadatas=[{"n": i} for i in range(60)])


@pytest.mark.parametrize(
    ("index_type", "storage"),
    [("flat", "fp32"), ("ivf", "fp16"), ("hnsw", "int8"), ("flat", "pq"), ("ivfpq", "fp32")],
)
def test_multivector_round_trip(tmp_path, rng, make_docs, index_type, storage):
    docs = make_docs(rng, 60, 8)
    idx = MultiVectorIndex.from_vectors(docs, index_type=index_type, storage=storage, pq_m=4)
    idx.remove(["5", "9"])
    idx.add([docs[0]], ["new"], [{"x": [1, 2]}])
    queries = make_docs(rng, 4, 8)
    before = idx.search(queries, k=7)
    idx.save(tmp_path / "mv")
    loaded = MultiVectorIndex.load(tmp_path / "mv", expected_dim=8)
    assert len(loaded) == len(idx) and loaded.num_vectors == idx.num_vectors
    assert loaded.config == idx.config
    assert hits_as_tuples(loaded.search(queries, k=7)) == hits_as_tuples(before)
    np.testing.assert_array_equal(loaded.get(["new"])[0].vectors, idx.get(["new"])[0].vectors)
    loaded.add([docs[1]], ["after-load"])  # still usable
    assert "after-load" in loaded and "5" not in loaded


def test_dense_round_trip(tmp_path, dense, rng):
    q = rng.standard_normal((3, 8))
    dense.save(tmp_path / "d")
    loaded = DenseIndex.load(tmp_path / "d")
    assert loaded.model_name == "m" and len(loaded) == 49
    assert hits_as_tuples(loaded.search(q, 5)) == hits_as_tuples(dense.search(q, 5))
    assert hits_as_tuples(loaded.search(q, 5, {"i": 7})) == hits_as_tuples(dense.search(q, 5, {"i": 7}))
    loaded.add(rng.standard_normal((1, 8)), ["d3"])  # the next slot does not collide
    assert len(loaded) == 50
    live = persistence.version_folder(tmp_path / "d")
    assert live.parent == tmp_path / "d" and (tmp_path / "d" / "CURRENT").read_text().strip() == live.name
    manifest = json.loads((live / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["kind"] == "dense"
    assert manifest["dim"] == 8 and manifest["count"] == 49
    for name, entry in manifest["files"].items():
        assert entry["size"] == os.path.getsize(live / name) and len(entry["sha256"]) == 64


def test_empty_index_round_trip(tmp_path):
    DenseIndex(4).save(tmp_path / "e")
    assert len(DenseIndex.load(tmp_path / "e")) == 0
    MultiVectorIndex(4).save(tmp_path / "m")
    assert len(MultiVectorIndex.load(tmp_path / "m")) == 0


def test_save_replaces_existing_folder(tmp_path, dense, rng):
    dense.save(tmp_path / "d")
    dense.add(rng.standard_normal((1, 8)), ["extra"])
    dense.save(tmp_path / "d")
    assert "extra" in DenseIndex.load(tmp_path / "d")
    assert sorted(os.listdir(tmp_path)) == ["d"]
    live = persistence.version_folder(tmp_path / "d").name
    assert sorted(os.listdir(tmp_path / "d")) == sorted([".lock", "CURRENT", live])  # the old version is gone


def test_failed_save_keeps_previous_index(tmp_path, multi, rng, make_docs, monkeypatch):
    multi.save(tmp_path / "mv")
    multi.add(make_docs(rng, 1, 8), ["unsaved"])
    calls = []
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second array of the save
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(persistence.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        multi.save(tmp_path / "mv")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["mv"]  # no temporary folder left behind
    live = persistence.version_folder(tmp_path / "mv").name
    assert sorted(os.listdir(tmp_path / "mv")) == sorted([".lock", "CURRENT", live])
    loaded = MultiVectorIndex.load(tmp_path / "mv")
    assert len(loaded) == 60 and "unsaved" not in loaded


@pytest.mark.parametrize(
    ("meta", "where"),
    [({"x": object()}, r"metadatas\[1\]\['x'\]: a object"), ({1: "a"}, "keys must be strings"),
     ({"v": float("nan")}, "finite"), ({"t": ("a",)}, "a tuple")],
)  # fmt: skip
def test_unsavable_metadata_is_refused_on_add(tmp_path, rng, meta, where):
    idx = DenseIndex.from_vectors(rng.standard_normal((1, 4)), ["a"], [{"ok": [1, {"y": None}]}])
    with pytest.raises(TypeError, match=where):
        idx.add(rng.standard_normal((2, 4)), ["b", "c"], [{}, meta])
    assert len(idx) == 1 and "b" not in idx  # nothing of the failed add is kept
    idx.save(tmp_path / "d")
    assert DenseIndex.load(tmp_path / "d").get(["a"])[0].metadata == {"ok": [1, {"y": None}]}


def _corrupt(folder, case):
    folder = persistence.version_folder(folder)
    manifest_path = folder / "manifest.json"
    if case == "version":
        manifest = json.loads(manifest_path.read_text())
        manifest["format_version"] = 99
        manifest_path.write_text(json.dumps(manifest))
        return "manifest.json"
    if case == "missing":
        (folder / "doc_lengths.npy").unlink()
        return "doc_lengths.npy"
    if case == "truncated_npy":
        path = folder / "token_codes.npy"
        path.write_bytes(path.read_bytes()[:100])
        return "token_codes.npy"
    if case == "truncated_faiss":
        path = folder / "candidates.faiss"
        path.write_bytes(path.read_bytes()[:64])
        return "candidates.faiss"
    if case == "flipped_byte":
        path = folder / "docs.json"
        data = bytearray(path.read_bytes())
        data[5] ^= 1
        path.write_bytes(bytes(data))
        return "docs.json"
    if case == "no_manifest":
        manifest_path.unlink()
        return "manifest.json"
    if case == "bad_json":
        manifest_path.write_text("{not json")
        return "manifest.json"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["version", "missing", "truncated_npy", "truncated_faiss", "flipped_byte", "no_manifest", "bad_json"],
)
def test_corrupt_folder_raises_naming_the_file(tmp_path, multi, case):
    folder = tmp_path / "mv"
    multi.save(folder)
    name = _corrupt(folder, case)
    with pytest.raises(IndexFormatError, match=name.replace(".", r"\.")):
        MultiVectorIndex.load(folder)
    assert isinstance(IndexFormatError("x"), ValueError)
    assert len(multi) == 60  # the in-memory index is untouched


def test_unchecked_truncation_still_detected(tmp_path, multi):
    """Without checksums (an older writer), a truncated file is still caught by the readers."""
    folder = tmp_path / "mv"
    multi.save(folder)
    live = persistence.version_folder(folder)
    manifest = json.loads((live / "manifest.json").read_text())
    for name in ("token_codes.npy", "candidates.faiss"):
        path = live / name
        path.write_bytes(path.read_bytes()[:120])
        manifest["files"][name] = {"size": 120}
    (live / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"token_codes\.npy|candidates\.faiss"):
        MultiVectorIndex.load(folder)


def test_wrong_dimension_and_kind(tmp_path, dense):
    dense.save(tmp_path / "d")
    with pytest.raises(IndexFormatError, match=r"manifest\.json.*dimension is 8, expected 384"):
        DenseIndex.load(tmp_path / "d", expected_dim=384)
    with pytest.raises(IndexFormatError, match="holds a 'dense' index"):
        MultiVectorIndex.load(tmp_path / "d")
    with pytest.raises(IndexFormatError, match="no index folder"):
        DenseIndex.load(tmp_path / "nothing")
    assert len(DenseIndex.load(tmp_path / "d")) == 49  # the saved index is untouched


def test_dimension_mismatch_between_files(tmp_path, dense):
    folder = tmp_path / "d"
    dense.save(folder)
    live = persistence.version_folder(folder)
    manifest = json.loads((live / "manifest.json").read_text())
    manifest["dim"] = 16
    (live / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"index\.faiss: FAISS index dimension 8"):
        DenseIndex.load(folder)
