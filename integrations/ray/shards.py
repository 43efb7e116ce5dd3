"""One Ray Data batch -> one index shard folder, written with the package's persistence format.

:func:`write_shard` runs as a Ray task inside ``map_batches``; it returns one row naming the
shard, so the driver learns which shards exist from the job's output (never by listing a
folder that an earlier run may have filled). Shard names and generated ids depend only on the
rows, so a retried task rewrites the same shard (atomically) and a rerun names the same ids.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .columns import column_matrix, column_token_vectors

ID_HASH_CHARS = 24


def content_id(text: str | None, metadata: dict[str, Any]) -> str:
    """A deterministic id for a row without one: a hash of its text and metadata.

    >>> content_id("a", {}) == content_id("a", {}) != content_id("b", {})
    True
    """
    payload = json.dumps([text, metadata], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:ID_HASH_CHARS]


_LIST_TYPES = tuple(
    getattr(pa, name)
    for name in ("ListType", "LargeListType", "FixedSizeListType", "ListViewType", "LargeListViewType")
    if hasattr(pa, name)
)


def holds_vectors(dtype: pa.DataType) -> bool:
    """Whether a column of ``dtype`` holds vectors: a (nested) list of floats, or a Ray tensor
    extension type. Other lists (``list<string>`` tags, ``list<int64>``) are metadata.

    >>> holds_vectors(pa.list_(pa.float32(), 4)), holds_vectors(pa.list_(pa.string()))
    (True, False)
    """
    if isinstance(dtype, pa.ExtensionType):
        return "tensor" in dtype.extension_name or holds_vectors(dtype.storage_type)
    if not isinstance(dtype, _LIST_TYPES):
        return False
    while isinstance(dtype, _LIST_TYPES):
        dtype = dtype.value_type
    return pa.types.is_floating(dtype)


def _metadata_columns(batch: pa.Table, given: list[str] | None, skip: set[str]) -> list[str]:
    if given is not None:
        missing = [c for c in given if c not in batch.column_names]
        if missing:
            raise KeyError(f"metadata columns {missing} are not in the dataset (it has {batch.column_names})")
        return list(given)
    return [f.name for f in batch.schema if f.name not in skip and not holds_vectors(f.type)]


def batch_rows(
    batch: pa.Table,
    *,
    kind: str,
    vector_column: str,
    id_column: str,
    text_column: str,
    metadata_columns: list[str] | None,
) -> tuple[list[str], Any, list[dict[str, Any]]]:
    """The ids, vectors and metadata of a batch.

    Ids come from ``id_column`` when the batch has it, else from :func:`content_id` of the
    text column and the metadata. Metadata is ``metadata_columns`` (default: every column
    that holds no vectors (see :func:`holds_vectors`), except the id and text columns).

    Raises:
        KeyError: a missing vector column, or neither an id nor a text column.
        ValueError: a null id.
    """
    names = batch.column_names
    if vector_column not in names:
        raise KeyError(f"the dataset has no vector column {vector_column!r} (it has {names})")
    meta_cols = _metadata_columns(batch, metadata_columns, {vector_column, id_column, text_column})
    metas = batch.select(meta_cols).to_pylist() if meta_cols else [{} for _ in range(batch.num_rows)]
    if id_column in names:
        raw = batch[id_column].to_pylist()
        if any(v is None for v in raw):
            raise ValueError(f"column {id_column!r} has null ids")
        ids = [str(v) for v in raw]
    elif text_column in names:
        texts = batch[text_column].to_pylist()
        ids = [content_id(t, m) for t, m in zip(texts, metas, strict=True)]
    else:
        raise KeyError(f"the dataset needs an id column {id_column!r} or a text column {text_column!r}")
    col = batch[vector_column]
    read = column_matrix if kind == "dense" else column_token_vectors
    vectors = read(col, vector_column)
    return ids, vectors, metas


def _same_row(a: int, b: int, vectors: Any, metas: list[dict[str, Any]]) -> bool:
    """Rows ``a`` and ``b`` hold the same metadata and vectors (equal to float noise)."""
    va, vb = np.asarray(vectors[a], dtype=np.float32), np.asarray(vectors[b], dtype=np.float32)
    return metas[a] == metas[b] and va.shape == vb.shape and np.allclose(va, vb, rtol=1e-5, atol=1e-5)


def _dedupe(ids: list[str], vectors: Any, metas: list[dict[str, Any]]) -> tuple[list[str], Any, list[dict]]:
    """Keep the first row of each id: a repeated row (same id, metadata and vectors, e.g. the
    same text and metadata with a generated id) is one document.

    Raises:
        ValueError: an id given to two rows whose metadata or vectors differ (as
            :func:`~vllm_pool.retrievers.sharded.sorted_records` raises across shards).
    """
    seen: dict[str, int] = {}
    keep = []
    for i, doc_id in enumerate(ids):
        first = seen.setdefault(doc_id, i)
        if first == i:
            keep.append(i)
        elif not _same_row(first, i, vectors, metas):
            raise ValueError(f"document id {doc_id!r} is in two rows of one batch with different contents")
    if len(keep) == len(ids):
        return ids, vectors, metas
    picked = vectors[keep] if hasattr(vectors, "shape") else [vectors[i] for i in keep]
    return [ids[i] for i in keep], picked, [metas[i] for i in keep]


def shard_name(ids: list[str], vectors: Any, metas: list[dict[str, Any]]) -> str:
    """A shard's folder name: a hash of its rows (ids, vectors and metadata, in id order), so
    a retried task rewrites its own shard and two batches never share a folder unless they
    hold the same rows."""
    digest = hashlib.sha256()
    for i in sorted(range(len(ids)), key=ids.__getitem__):
        meta = json.dumps(metas[i], sort_keys=True, ensure_ascii=False, default=str)
        digest.update(f"{ids[i]}\0{meta}\0".encode())
        digest.update(np.ascontiguousarray(vectors[i], dtype=np.float32).tobytes())
    return "shard-" + digest.hexdigest()[:16]


def write_shard(
    batch: pa.Table,
    *,
    folder: str,
    kind: str,
    vector_column: str,
    id_column: str,
    text_column: str,
    metadata_columns: list[str] | None,
    shard_kwargs: dict[str, Any],
) -> pa.Table:
    """Index one batch into a shard folder under ``folder``; return its row.

    Returns:
        A one-row table: ``shard`` (folder name), ``count`` and ``ids`` (a list); no row for
        an empty batch.
    """
    from vllm_pool.retrievers.sharded import index_class

    schema = pa.schema([("shard", pa.string()), ("count", pa.int64()), ("ids", pa.list_(pa.string()))])
    if batch.num_rows == 0:
        return schema.empty_table()
    ids, vectors, metas = _dedupe(
        *batch_rows(
            batch,
            kind=kind,
            vector_column=vector_column,
            id_column=id_column,
            text_column=text_column,
            metadata_columns=metadata_columns,
        )
    )
    dim = vectors.shape[1] if kind == "dense" else vectors[0].shape[1]
    index = index_class(kind)(dim, **shard_kwargs)
    index.add(vectors, ids, metas)
    name = shard_name(ids, vectors, metas)
    index.save(Path(folder) / name)
    return pa.table({"shard": [name], "count": [len(ids)], "ids": [ids]}, schema=schema)
