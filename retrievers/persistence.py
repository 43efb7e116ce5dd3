"""Saving and loading indexes without pickle.

An index folder holds FAISS files (``faiss.write_index``), ``.npy`` arrays
(``allow_pickle=False``), ``docs.json`` (ids, slots, metadata) and ``manifest.json``::

    {"format_version": 1, "kind": "dense", "model_name": ..., "dim": 384, "count": 10,
     "config": {...}, "files": {"vectors.npy": {"size": 15488, "sha256": "..."}, ...}}

These files live in a version sub-folder that ``CURRENT`` names (see :mod:`.index_folder`):
a save writes a new version and switches the pointer in one atomic step, so a failed or
killed save leaves the previous index live. Every problem found while loading raises
:class:`~.types.IndexFormatError` naming the file and the field (see :mod:`.manifest`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np

from .faiss_index import to_cpu
from .index_folder import clean_leftovers, fsync_path, reading, version_folder, write_version
from .manifest import (
    DOCS,
    FORMAT_VERSION,
    MANIFEST,
    check_docs,
    check_npy_header,
    check_regular_file,
    parse_manifest,
    read_json,
)
from .types import IndexFormatError

logger = logging.getLogger(__name__)

_READ_ATTEMPTS = 5
"""Reads of an index folder before a load gives up on saves that keep switching versions."""
T = TypeVar("T")


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
        indexes: ``.faiss`` file name -> CPU FAISS index (or, to be written, its serialized bytes).
        trained_on: vectors the FAISS index was trained on (``None``: no FAISS index, or a
            folder saved before this was recorded), so a loaded IVF index is not re-trained early.
    """

    kind: str
    dim: int
    count: int
    model_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    docs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    indexes: dict[str, Any] = field(default_factory=dict)
    trained_on: int | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_index_files(path: str | os.PathLike, files: IndexFiles) -> None:
    """Write ``files`` as a new version of the index folder ``path`` and switch to it atomically.

    Args:
        path: the index folder (created; the previous version stays live until the switch).
        files: what to write.

    Raises:
        ValueError: ``path`` exists and is not a folder.
    """
    write_version(path, lambda folder: _write_files(folder, files))
    logger.info("saved %s index (%d documents) to %s", files.kind, files.count, path)


def _write_files(folder: Path, files: IndexFiles) -> None:
    entries: dict[str, dict[str, Any]] = {}
    writers: list[tuple[str, Callable[[Path], None]]] = []
    for name, arr in files.arrays.items():
        writers.append((name, lambda p, a=arr: np.save(p, a, allow_pickle=False)))
    for name, index in files.indexes.items():
        if isinstance(index, np.ndarray):  # serialized already (a snapshot, see files_of)
            writers.append((name, lambda p, b=index: b.tofile(p)))
        else:
            writers.append((name, lambda p, i=index: faiss.write_index(to_cpu(i), str(p))))
    docs_text = json.dumps(files.docs, ensure_ascii=False, allow_nan=False)
    writers.append((DOCS, lambda p: p.write_text(docs_text, encoding="utf-8")))
    for name, write in writers:
        file_path = folder / name
        write(file_path)
        fsync_path(file_path)
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
    if files.trained_on is not None:
        manifest["trained_on"] = files.trained_on
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    fsync_path(folder / MANIFEST)


def load_index_files(path: str | os.PathLike, kind: str, expected_dim: int | None = None) -> IndexFiles:
    """Read and verify an index folder written by :func:`save_index_files`.

    The folder may come from anyone: every field is validated before it is used, only plain
    file names inside the folder are read, and an ``.npy`` header must match its file's size
    before the array is allocated. A save that switches versions while this reads is retried
    (see :func:`read_live`).

    Args:
        path: the index folder.
        kind: the expected index kind.
        expected_dim: when given, the dimension the index must have.

    Returns:
        The folder's contents.

    Raises:
        IndexFormatError: wrong format version / kind / dimension, a missing file, a
            malformed field, or a file whose size or checksum differs from the manifest or
            that cannot be parsed; the message names the file and the field.
    """
    return read_live(path, lambda folder: _read_files(folder, kind, expected_dim))


def read_live(
    path: str | os.PathLike, read: Callable[[Path], T], marker: str = MANIFEST, missing: str | None = None
) -> T:
    """Call ``read`` on the live version folder of ``path`` under its reader lock
    (:func:`.index_folder.reading`), so that a load sees the old index or the new one: a save
    that switches ``CURRENT`` before the lock is taken makes ``read`` run again on the new version.

    Args:
        path: the index folder.
        read: reads the version folder it is given; raises :class:`IndexFormatError` on a
            problem (a ``FileNotFoundError`` counts as one).
        marker: the top-level file of the older flat layout (see :func:`.index_folder.version_folder`).
        missing: when given, an error finding the live version is raised as
            ``"PATH/MARKER: {missing} (the error)"``.

    Returns:
        What ``read`` returned.

    Raises:
        IndexFormatError: no index at ``path``, or what ``read`` raised when no save switched
            versions meanwhile (or on the last of :data:`_READ_ATTEMPTS`).
    """
    root = Path(path)
    for attempt in range(_READ_ATTEMPTS):
        folder: Path | None = None
        try:
            try:
                folder = version_folder(root, marker)
                with reading(folder):
                    out = read(folder)
            except FileNotFoundError as exc:  # removed while read (a save's clean-up)
                raise IndexFormatError(f"{exc.filename}: file missing") from exc
        except IndexFormatError as exc:
            if attempt + 1 < _READ_ATTEMPTS and _switched(root, folder, marker):
                logger.info("%s: a save switched versions during the load; reading again", root)
                continue
            if folder is None and missing is not None:
                raise IndexFormatError(f"{root / marker}: {missing} ({exc})") from exc
            raise
        if folder != root:
            clean_leftovers(root)
        return out
    raise AssertionError("unreachable")  # pragma: no cover


def _switched(root: Path, folder: Path | None, marker: str) -> bool:
    """Whether ``root`` now resolves to a live version other than ``folder`` (``None``: none found)."""
    try:
        return version_folder(root, marker) != folder
    except IndexFormatError:
        return False


def _read_files(folder: Path, kind: str, expected_dim: int | None) -> IndexFiles:
    manifest = parse_manifest(folder / MANIFEST, kind, expected_dim)
    for name, entry in manifest.files.items():
        _verify(folder / name, entry)
    out = IndexFiles(
        kind=kind,
        dim=manifest.dim,
        count=manifest.count,
        model_name=manifest.model_name,
        config=dict(manifest.config),
        trained_on=manifest.trained_on,
    )
    for name in manifest.files:
        file_path = folder / name
        try:
            if name.endswith(".npy"):
                check_npy_header(file_path)
                out.arrays[name] = np.load(file_path, allow_pickle=False)
            elif name.endswith(".faiss"):
                out.indexes[name] = faiss.read_index(str(file_path))
        except IndexFormatError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise IndexFormatError(f"{file_path}: not a readable .npy array ({exc})") from exc
        except (RuntimeError, MemoryError) as exc:
            raise IndexFormatError(f"{file_path}: not a readable FAISS index ({exc})") from exc
        if name in out.indexes and out.indexes[name].d != manifest.dim:
            raise IndexFormatError(
                f"{file_path}: FAISS index dimension {out.indexes[name].d}, manifest says {manifest.dim}"
            )
    out.docs = read_json(folder / DOCS, limit=manifest.files[DOCS]["size"])
    check_docs(folder / DOCS, out.docs, manifest.count)
    return out


def _verify(path: Path, entry: dict[str, Any]) -> None:
    check_regular_file(path)
    size = path.stat().st_size
    if size != entry["size"]:
        raise IndexFormatError(
            f"{path}: size {size} bytes, manifest says {entry['size']} (truncated or modified)"
        )
    if entry.get("sha256") is not None and _sha256(path) != entry["sha256"]:
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
    """The :class:`IndexFiles` of a dense or multi-vector ``index`` (its FAISS index as
    ``faiss_name``), taken under the index's lock: a snapshot (``arrays`` copies, the FAISS
    index serialized), so that the files are written after the lock is released while other
    threads search and add."""
    files = IndexFiles(
        kind=index.kind,
        dim=index.dim,
        count=len(index._registry),
        model_name=index.model_name,
        config=dict(index.config),
        docs=docs,
        arrays=arrays,
    )
    if index._index is not None:
        files.indexes[faiss_name] = faiss.serialize_index(to_cpu(index._index))
        files.trained_on = int(index._trained_on)
    return files


def restore_faiss(
    index: Any, files: IndexFiles, name: str, rows: np.ndarray, path: str | os.PathLike, use_gpu: bool | None
) -> None:
    """Give a loaded ``index`` (its registry filled) the FAISS index ``name`` of ``files``, checked
    against the live documents, with its tombstones and training count.

    Args:
        index: a dense or multi-vector index.
        files: the folder's contents.
        name: the FAISS file (``"index.faiss"``, ``"candidates.faiss"``).
        rows: FAISS rows of each live document, ``int64 [n]`` (registry order).
        path: the folder, for messages.
        use_gpu: as in the index.

    Raises:
        IndexFormatError: fewer FAISS vectors than live rows, or labels that are not the slots.
            More vectors are removed ones a rebuild could not drop (tombstones, skipped by searches).
    """
    if name not in files.indexes or not index._uses_faiss():
        return
    faiss_index = files.indexes[name]
    live = int(rows.sum())
    if faiss_index.ntotal < live:
        raise IndexFormatError(f"{path}/{name}: {faiss_index.ntotal} vectors for {live} live document rows")
    check_labels(faiss_index, index._registry.slots(), rows, f"{path}/{name}", index._registry.next_slot)
    index._tombstones = faiss_index.ntotal - live
    index._trained_on = faiss_index.ntotal if files.trained_on is None else files.trained_on
    index._index = placed_faiss(faiss_index, index.config, use_gpu)


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


def faiss_labels(faiss_index: Any) -> np.ndarray | None:
    """The labels of a CPU FAISS index's vectors ``int64 [ntotal]``: its id map (flat, HNSW) or
    its inverted lists (IVF); ``None`` for an index that keeps them elsewhere."""
    inner = faiss.downcast_index(faiss_index)
    if isinstance(inner, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(inner.id_map)
    ivf = faiss.try_extract_index_ivf(faiss_index)
    invlists = None if ivf is None else ivf.invlists
    if invlists is None or not isinstance(faiss.downcast_InvertedLists(invlists), faiss.ArrayInvertedLists):
        return None
    parts = [np.zeros(0, np.int64)]
    for i in range(ivf.nlist):
        n = invlists.list_size(i)
        if n:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(i), n).astype(np.int64))
    return np.concatenate(parts)


def check_labels(
    faiss_index: Any, slots: np.ndarray, rows: np.ndarray, path: Any, next_slot: int | None = None
) -> None:
    """Check that a loaded FAISS index labels its vectors with the documents' slots.

    Indexes with an explicit id map (flat, HNSW) and IVF indexes (their inverted lists) are
    checked this way; others by their vector count only.

    Args:
        faiss_index: the CPU FAISS index.
        slots: live document slots ``int64 [n]``.
        rows: FAISS rows of each live document ``int64 [n]`` (1 for dense, tokens for ColBERT).
        path: the file, for the message.
        next_slot: when given, every label must be below it (vectors of removed documents
            kept as tombstones have older slots; a later add must not reuse one).

    Raises:
        IndexFormatError: a live document whose label count differs from its rows, or a label
            outside ``[0, next_slot)``.
    """
    labels = faiss_labels(faiss_index)  # [ntotal]
    if labels is None:
        return
    if next_slot is not None and len(labels) and (labels.min() < 0 or labels.max() >= next_slot):
        raise IndexFormatError(
            f"{path}: a FAISS label is outside the slots of docs.json [0, {next_slot}) "
            f"(labels {int(labels.min())}..{int(labels.max())})"
        )
    found, counts = np.unique(labels, return_counts=True)
    pos = np.searchsorted(found, slots)
    pos_ok = np.minimum(pos, max(len(found) - 1, 0))
    present = (pos < len(found)) & (found[pos_ok] == slots) if len(found) else np.zeros(len(slots), bool)
    have = np.where(present, counts[pos_ok] if len(found) else 0, 0)
    bad = np.flatnonzero(have != rows)
    if len(bad):
        i = int(bad[0])
        raise IndexFormatError(
            f"{path}: the FAISS labels do not match docs.json (slot {int(slots[i])} has "
            f"{int(have[i])} vectors, expected {int(rows[i])})"
        )
