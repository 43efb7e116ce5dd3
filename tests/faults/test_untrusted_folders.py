"""Index folders from anyone: every file damaged, and manifests crafted with valid checksums.

Each case must raise ``IndexFormatError`` naming the file (and the field), read nothing
outside the folder, allocate nothing large, and leave the original folder loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, IndexFormatError, MultiVectorIndex
from vllm_pool.retrievers.persistence import version_folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Saved folders: a dense flat index and an int8 multi-vector index with tombstones."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("saved")
    dense = DenseIndex.from_vectors(
        rng.standard_normal((20, 8)), [f"d{i}" for i in range(20)], [{"i": i} for i in range(20)]
    )
    dense.remove(["d4"])
    dense.save(root / "dense")
    docs = [rng.standard_normal((int(rng.integers(2, 6)), 8)).astype(np.float32) for _ in range(15)]
    multi = MultiVectorIndex.from_vectors(docs, storage="int8", index_type="hnsw")
    multi.remove(["3"])
    multi.save(root / "multi")
    return {"dense": (DenseIndex, root / "dense", 19), "multi": (MultiVectorIndex, root / "multi", 14)}


def _copy(saved, kind, tmp_path) -> tuple[type, Path, Path]:
    cls, src, _ = saved[kind]
    dst = tmp_path / kind
    shutil.copytree(src, dst)
    return cls, dst, version_folder(dst)


def _damage(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: max(len(path.read_bytes()) // 2, 1) - 1])
    elif how == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x20
        path.write_bytes(bytes(data))
    elif how == "emptied":
        path.write_bytes(b"")


@pytest.mark.parametrize("kind", ["dense", "multi"])
@pytest.mark.parametrize("how", ["deleted", "truncated", "flipped", "emptied"])
def test_every_file_damaged(saved, tmp_path, kind, how):
    cls, _, live = _copy(saved, kind, tmp_path)
    names = sorted(os.listdir(live))
    assert "manifest.json" in names and "docs.json" in names and len(names) >= 4
    for name in names:
        cls_, dst, live = _copy(saved, kind, tmp_path / f"{name}-{how}")
        _damage(live / name, how)
        with pytest.raises(IndexFormatError) as err:
            cls_.load(dst)
        message = str(err.value)
        assert name in message or "manifest.json" in message, message  # the file is named
    assert len(cls.load(saved[kind][1])) == saved[kind][2]  # the original folder is untouched


@pytest.mark.parametrize("how", ["truncated", "flipped", "emptied", "garbage", "directory"])
def test_damaged_pointer(saved, tmp_path, how):
    cls, dst, _ = _copy(saved, "dense", tmp_path)
    pointer = dst / "CURRENT"
    if how == "garbage":
        pointer.write_bytes(b"../../etc\n")
    elif how == "directory":
        pointer.unlink()
        pointer.mkdir()
    else:
        _damage(pointer, how)
    with pytest.raises(IndexFormatError, match="CURRENT"):
        cls.load(dst)
    (pointer.rmdir() if pointer.is_dir() else pointer.unlink())
    assert len(cls.load(dst)) == 19  # without a pointer, the one complete version is read


def _rewrite(live: Path, manifest_edit=None, docs_edit=None, files: dict[str, bytes] | None = None) -> None:
    """Edit the manifest / docs.json / files and re-sign them, so only the validation can object."""
    manifest = json.loads((live / "manifest.json").read_text())
    if docs_edit is not None:
        docs = json.loads((live / "docs.json").read_text())
        docs = docs_edit(docs)
        (live / "docs.json").write_text(docs if isinstance(docs, str) else json.dumps(docs))
    for name, data in (files or {}).items():
        (live / name).write_bytes(data)
    for name in manifest["files"]:
        if (live / name).is_file():
            data = (live / name).read_bytes()
            manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if manifest_edit is not None:
        manifest = manifest_edit(manifest)
    (live / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))


def _set(key, value):
    def edit(m):
        m[key] = value
        return m

    return edit


def _add_file(name):
    def edit(m):
        m["files"][name] = {"size": 1000}
        return m

    return edit


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (_add_file("/etc/passwd"), r"manifest\.json: field 'files': '/etc/passwd' is not a plain file name"),
        (_add_file("../../../../etc/passwd"), r"field 'files': '\.\./\.\./\.\./\.\./etc/passwd'"),
        (_add_file("sub/vectors.npy"), r"field 'files': 'sub/vectors\.npy'"),
        (_add_file("..npy"), r"field 'files': '\.\.npy'"),
        (_add_file("manifest.json"), r"field 'files': 'manifest\.json'"),
        (_set("count", None), r"field 'count': None"),
        (_set("count", "abc"), r"field 'count': 'abc'"),
        (_set("count", True), r"field 'count': True"),
        (_set("count", -1), r"field 'count': -1"),
        (_set("count", 10**15), r"field 'count'"),
        (_set("dim", "8"), r"field 'dim'"),
        (_set("dim", 0), r"field 'dim'"),
        (_set("format_version", 1.0), r"format_version 1\.0 is not supported"),
        (_set("config", []), r"field 'config'"),
        (_set("model_name", 5), r"field 'model_name'"),
        (_set("files", ["docs.json"]), r"field 'files'"),
        (lambda m: json.dumps(m).replace('"count": 19', '"count": 1e400'), r"field 'count': inf"),
        (lambda m: json.dumps(m).replace('"count": 19', '"count": NaN'), r"not valid JSON"),
        (lambda m: [m], r"manifest is not a JSON object"),
        (lambda m: {**m, "files": {**m["files"], "docs.json": {"size": "12"}}}, r"files\.docs\.json\.size"),
        (lambda m: {**m, "files": {**m["files"], "docs.json": {"size": 1, "sha256": "zz"}}}, r"sha256"),
    ],
)
def test_crafted_manifest(saved, tmp_path, edit, pattern):
    cls, dst, live = _copy(saved, "dense", tmp_path)
    _rewrite(live, manifest_edit=edit)
    with pytest.raises(IndexFormatError, match=pattern) as err:
        cls.load(dst)
    assert "manifest.json" in str(err.value) and "bytes" not in str(err.value)  # nothing about outside files


def _slots(fn):
    def edit(docs):
        docs["slots"] = fn(docs["slots"])
        return docs

    return edit


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: [d], r"docs\.json: not a JSON object"),
        (lambda d: {**d, "ids": None}, r"field 'ids' is not a list"),
        (lambda d: {**d, "ids": d["ids"][:-1]}, r"field 'ids' holds 18 entries, manifest count is 19"),
        (lambda d: {**d, "ids": [1, *d["ids"][1:]]}, r"field 'ids\[0\]': 1 is not a string"),
        (lambda d: {**d, "ids": [d["ids"][1], *d["ids"][1:]]}, r"field 'ids': duplicate ids"),
        (_slots(lambda s: [s[1], *s[1:]]), r"field 'slots\[1\]'.*unique and increasing"),
        (_slots(lambda s: [s[1], s[0], *s[2:]]), r"field 'slots\[1\]'"),
        (_slots(lambda s: ["0", *s[1:]]), r"field 'slots\[0\]'"),
        (
            lambda d: {**_slots(lambda s: [x + 1 for x in s])(d), "next_slot": d["next_slot"] + 1},
            r"index\.faiss: the FAISS labels do not match docs\.json",
        ),
        (lambda d: {**d, "next_slot": 0}, r"field 'next_slot': 0 must be an integer above every slot"),
        (lambda d: {**d, "next_slot": 1e400}, r"not valid JSON|field 'next_slot'"),
        (lambda d: {**d, "metadatas": [[], *d["metadatas"][1:]]}, r"field 'metadatas\[0\]'"),
        (lambda d: "[" * 100_000, r"docs\.json: not valid JSON"),
    ],
)
def test_crafted_docs(saved, tmp_path, edit, pattern):
    cls, dst, live = _copy(saved, "dense", tmp_path)
    _rewrite(live, docs_edit=edit)
    with pytest.raises(IndexFormatError, match=pattern):
        cls.load(dst)


def _npy(shape_text: str, data: bytes, descr: str = "<f4") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (_npy("(10000000000, 8)", b"\0" * 64), r"\[10000000000, 8\] of float32 needs 320000000000 bytes"),
        (_npy("(19, 8)", b"\0" * 16), r"needs 608 bytes of data, the file holds 16"),
        (_npy("(19, 8)", b"\0" * 608, descr="|O"), r"not a numeric array|not a readable"),
        (_npy("(-1, 8)", b""), r"bad shape|not a readable"),
        (b"\x93NUMPY\x09\x00" + b"\0" * 100, r"not a readable \.npy"),
        (_npy("(19, 4)", b"\0" * 304), r"vectors\.npy: unexpected shape \[19, 4\]"),
    ],
)
def test_crafted_npy_header(saved, tmp_path, data, pattern):
    cls, dst, live = _copy(saved, "dense", tmp_path)
    _rewrite(live, files={"vectors.npy": data})
    with pytest.raises(IndexFormatError, match=pattern):
        cls.load(dst)


def test_links_are_not_followed(saved, tmp_path):
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros((19, 8), np.float32))
    cls, dst, live = _copy(saved, "dense", tmp_path)
    (live / "vectors.npy").unlink()
    (live / "vectors.npy").symlink_to(outside)
    _rewrite(live)
    with pytest.raises(IndexFormatError, match=r"vectors\.npy: is a symbolic link"):
        cls.load(dst)
    cls, dst, live = _copy(saved, "dense", tmp_path / "b")
    (dst / "CURRENT").write_text("v-000001-abcdef01\n")
    (dst / "v-000001-abcdef01").symlink_to(live)
    with pytest.raises(IndexFormatError, match="not a folder"):
        cls.load(dst)


def test_multivector_crafted_lengths(saved, tmp_path):
    cls, dst, live = _copy(saved, "multi", tmp_path)
    lengths = np.load(live / "doc_lengths.npy")
    lengths[0] += 1
    lengths[1] -= 1  # same total: only the per-document spans are wrong
    buf = tmp_path / "l.npy"
    np.save(buf, lengths)
    _rewrite(live, files={"doc_lengths.npy": buf.read_bytes()})
    with pytest.raises(IndexFormatError, match=r"candidates\.faiss: the FAISS labels do not match"):
        cls.load(dst)
    lengths[0], lengths[1] = lengths[0] + lengths[1] + 1, -1
    np.save(buf, lengths)
    _rewrite(live, files={"doc_lengths.npy": buf.read_bytes()})
    with pytest.raises(IndexFormatError, match=r"doc_lengths\.npy"):
        cls.load(dst)
