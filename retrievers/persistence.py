"""Saving and loading indexes without pickle.

An index folder holds FAISS files (``faiss.write_index``), ``.npy`` arrays
(``allow_pickle=False``), ``docs.json`` (ids, slots, metadata) and ``manifest.json``::

    {"format_version": 1, "kind": "dense", "model_name": ..., "dim": 384, "count": 10,
     "config": {...}, "files": {"vectors.npy": {"size": 15488, "sha256": "..."}, ...}}

A save writes into a temporary sibling folder, then renames it into place, so a failed save
leaves the previous index intact. Every problem found while loading raises
:class:`~.types.IndexFormatError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .faiss_index import to_cpu
from .types import IndexFormatError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCS = "docs.json"


@dataclass
class IndexFiles:
    """The contents of an index folder, in memory.

    Attributes:
        kind: ``"dense"`` or ``"multivector"``.
        dim: vector dimension.
        count: number of live documents.
        model_name: the encoder's model name, if known.
        config: the index's constructor options (JSON values).
        docs: the registry as JSON (see :meth:`.registry.Registry.to_json`).
        arrays: ``.npy`` file name -> array.
        indexes: ``.faiss`` file name -> CPU FAISS index.
    """

    kind: str
    dim: int
    count: int
    model_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    docs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    indexes: dict[str, faiss.Index] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_index_files(path: str | os.PathLike, files: IndexFiles) -> None:
    """Write ``files`` to the folder ``path``, atomically replacing any existing folder.

    Args:
        path: the index folder (created; an existing one is replaced only on success).
        files: what to write.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        entries: dict[str, dict[str, Any]] = {}
        writers: list[tuple[str, Callable[[Path], None]]] = []
        for name, arr in files.arrays.items():
            writers.append((name, lambda p, a=arr: np.save(p, a, allow_pickle=False)))
        for name, index in files.indexes.items():
            writers.append((name, lambda p, i=index: faiss.write_index(to_cpu(i), str(p))))
        docs_text = json.dumps(files.docs, ensure_ascii=False)
        writers.append((DOCS, lambda p: p.write_text(docs_text, encoding="utf-8")))
        for name, write in writers:
            file_path = tmp / name
            write(file_path)
            _fsync(file_path)
            entries[name] = {"size": file_path.stat().st_size, "sha256": _sha256(file_path)}
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": files.kind,
            "model_name": files.model_name,
            "dim": files.dim,
            "count": files.count,
            "config": files.config,
            "files": entries,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _fsync(tmp / MANIFEST)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved %s index (%d documents) to %s", files.kind, files.count, target)


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)  # put the previous index back
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_index_files(path: str | os.PathLike, kind: str, expected_dim: int | None = None) -> IndexFiles:
    """Read and verify an index folder written by :func:`save_index_files`.

    Args:
        path: the index folder.
        kind: the expected index kind.
        expected_dim: when given, the dimension the index must have.

    Returns:
        The folder's contents.

    Raises:
        IndexFormatError: wrong format version / kind / dimension, a missing file, or a
            file whose size or checksum differs from the manifest or that cannot be parsed.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise IndexFormatError(f"{folder}: no index folder there")
    manifest = _read_manifest(folder / MANIFEST)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{folder / MANIFEST}: format_version {manifest.get('format_version')!r} is not "
            f"supported (this version reads {FORMAT_VERSION})"
        )
    if manifest.get("kind") != kind:
        raise IndexFormatError(
            f"{folder / MANIFEST}: holds a {manifest.get('kind')!r} index, expected {kind!r}"
        )
    dim = manifest.get("dim")
    if not isinstance(dim, int) or dim <= 0:
        raise IndexFormatError(f"{folder / MANIFEST}: bad dimension {dim!r}")
    if expected_dim is not None and dim != expected_dim:
        raise IndexFormatError(f"{folder / MANIFEST}: index dimension is {dim}, expected {expected_dim}")
    entries = manifest.get("files")
    if not isinstance(entries, dict) or DOCS not in entries:
        raise IndexFormatError(f"{folder / MANIFEST}: bad or missing 'files' table")
    for name, entry in entries.items():
        _verify(folder / name, entry)
    out = IndexFiles(
        kind=kind,
        dim=dim,
        count=int(manifest.get("count", 0)),
        model_name=manifest.get("model_name"),
        config=dict(manifest.get("config") or {}),
    )
    for name in entries:
        file_path = folder / name
        if name.endswith(".npy"):
            try:
                out.arrays[name] = np.load(file_path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise IndexFormatError(f"{file_path}: not a readable .npy array ({exc})") from exc
        elif name.endswith(".faiss"):
            try:
                out.indexes[name] = faiss.read_index(str(file_path))
            except RuntimeError as exc:
                raise IndexFormatError(f"{file_path}: not a readable FAISS index ({exc})") from exc
            if out.indexes[name].d != dim:
                raise IndexFormatError(
                    f"{file_path}: FAISS index dimension {out.indexes[name].d}, manifest says {dim}"
                )
    try:
        out.docs = json.loads((folder / DOCS).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{folder / DOCS}: not valid JSON ({exc})") from exc
    if len(out.docs.get("ids", [])) != out.count:
        raise IndexFormatError(
            f"{folder / DOCS}: holds {len(out.docs.get('ids', []))} ids, manifest count is {out.count}"
        )
    return out


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise IndexFormatError(f"{path}: manifest missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{path}: manifest is not a JSON object")
    return manifest


def _verify(path: Path, entry: Any) -> None:
    if not path.is_file():
        raise IndexFormatError(f"{path}: file missing")
    if not isinstance(entry, dict) or "size" not in entry:
        raise IndexFormatError(f"{path}: no size recorded in the manifest")
    size = path.stat().st_size
    if size != entry["size"]:
        raise IndexFormatError(
            f"{path}: size {size} bytes, manifest says {entry['size']} (truncated or modified)"
        )
    if "sha256" in entry and _sha256(path) != entry["sha256"]:
        raise IndexFormatError(f"{path}: sha256 checksum differs from the manifest (corrupt)")


def open_index(cls: Any, files: IndexFiles, path: str | os.PathLike, use_gpu: bool | None) -> tuple[Any, Any]:
    """An empty index of class ``cls`` configured from ``files``, and its document registry.

    Raises:
        IndexFormatError: the manifest's configuration or ``docs.json`` do not fit together.
    """
    from .registry import Registry

    try:
        index = cls(files.dim, use_gpu=use_gpu, model_name=files.model_name, **files.config)
        registry = Registry.from_json(files.docs)
    except (TypeError, ValueError, KeyError) as exc:
        raise IndexFormatError(f"{path}: inconsistent manifest or docs.json ({exc})") from exc
    return index, registry


def files_of(index: Any, docs: dict[str, Any], arrays: dict[str, np.ndarray], faiss_name: str) -> IndexFiles:
    """The :class:`IndexFiles` of a dense or multi-vector ``index`` (its FAISS index as ``faiss_name``)."""
    files = IndexFiles(
        kind=index.kind,
        dim=index.dim,
        count=len(index._registry),
        model_name=index.model_name,
        config=index.config,
        docs=docs,
        arrays=arrays,
    )
    if index._index is not None:
        files.indexes[faiss_name] = index._index
    return files


def placed_faiss(faiss_index: Any, config: dict[str, Any], use_gpu: bool | None) -> Any:
    """A loaded FAISS index with the search settings of ``config``, on the chosen device."""
    from .faiss_index import set_search_params, to_device

    set_search_params(faiss_index, config["nprobe"], config["ef_search"])
    return to_device(faiss_index, use_gpu)


def check_array(files: IndexFiles, name: str, ndim: int, dim: int | None = None) -> np.ndarray:
    """Return ``files.arrays[name]``, raising :class:`IndexFormatError` on a bad shape."""
    if name not in files.arrays:
        raise IndexFormatError(f"{name}: file missing from the manifest")
    arr = files.arrays[name]
    if arr.ndim != ndim or (dim is not None and arr.shape[-1] != dim):
        raise IndexFormatError(f"{name}: unexpected shape {list(arr.shape)}")
    return arr
