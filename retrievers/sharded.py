"""Indexes built in shards (e.g. one per Ray Data block): merged into one, or searched together.

A shard is an ordinary :class:`~.dense.DenseIndex` / :class:`~.multivector.MultiVectorIndex`
folder. :func:`merge_indexes` puts the documents of several shards into one index, in id
order, so the result does not depend on which shard finished first. :class:`ShardedIndex`
serves shards as they are: every shard is searched and the hits are merged by score (inner
product and MaxSim scores are comparable across shards of the same model). A sharded folder
is the shard folders plus ``shards.json``::

    {"format_version": 1, "kind": "dense", "dim": 384, "shards": ["shard-0a1b...", ...]}
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dense import DenseIndex
from .index_base import DocumentIndex
from .index_folder import write_version
from .multivector import MultiVectorIndex
from .persistence import MANIFEST, read_live
from .types import Filter, Hit, IndexFormatError, Record, check_k

SHARDS_FILE = "shards.json"
SHARDS_VERSION = 1
INDEX_CLASSES: dict[str, type[DocumentIndex]] = {"dense": DenseIndex, "multivector": MultiVectorIndex}
"""Index kind (as in ``manifest.json``) -> class."""


def index_class(kind: str) -> type[DocumentIndex]:
    """The index class of ``kind`` (``"dense"`` or ``"multivector"``)."""
    if kind not in INDEX_CLASSES:
        raise ValueError(f"unknown index kind {kind!r}: expected one of {sorted(INDEX_CLASSES)}")
    return INDEX_CLASSES[kind]


def load_index(path: str | os.PathLike, use_gpu: bool | None = None) -> Any:
    """Load a dense or multi-vector index folder, whichever its manifest says it holds.

    Raises:
        IndexFormatError: no readable manifest, or an unknown kind.
    """

    def read(folder: Path) -> Any:
        manifest = folder / MANIFEST
        try:
            kind = json.loads(manifest.read_text(encoding="utf-8"))["kind"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(f"{manifest}: no readable index manifest ({exc})") from exc
        if kind not in INDEX_CLASSES:
            raise IndexFormatError(f"{manifest}: unknown index kind {kind!r}")
        return INDEX_CLASSES[kind].load(folder, use_gpu=use_gpu)  # the version read-locked here

    return read_live(path, read, missing="no readable index manifest")


def _same_kind(indexes: Sequence[Any]) -> tuple[str, int]:
    if not indexes:
        raise ValueError("no shards given")
    kinds = {(ix.kind, ix.dim) for ix in indexes}
    if len(kinds) != 1:
        raise ValueError(f"shards differ in kind or dimension: {sorted(kinds)}")
    return next(iter(kinds))


def sorted_records(indexes: Sequence[Any]) -> list[Record]:
    """Every document of ``indexes``, sorted by id.

    An id found in several shards with the same metadata and vectors (the same row indexed
    twice, e.g. by a retried job) is kept once.

    Raises:
        ValueError: an id held by two shards with different contents.
    """
    by_id: dict[str, Record] = {}
    for index in indexes:
        for rec in index.get(index.ids()):
            seen = by_id.get(rec.id)
            if seen is None:
                by_id[rec.id] = rec
            elif seen.metadata != rec.metadata or not np.allclose(seen.vectors, rec.vectors, atol=1e-6):
                raise ValueError(f"document id {rec.id!r} is in two shards with different contents")
    return [by_id[i] for i in sorted(by_id)]


def merge_indexes(indexes: Sequence[Any], **index_kwargs: Any) -> Any:
    """One index holding the documents of every shard, added in id order.

    Args:
        indexes: loaded shards of one kind and dimension.
        **index_kwargs: options of the merged index (``index_type``, ``storage``, ...); IVF /
            PQ / PLAID structures are trained on all documents. ``model_name`` defaults to the
            first shard's.

    Returns:
        A new :class:`~.dense.DenseIndex` or :class:`~.multivector.MultiVectorIndex`.
    """
    kind, dim = _same_kind(indexes)
    index_kwargs.setdefault("model_name", indexes[0].model_name)
    records = sorted_records(indexes)
    cls = INDEX_CLASSES[kind]
    if not records:
        return cls(dim, **index_kwargs)
    ids = [r.id for r in records]
    metas = [r.metadata for r in records]
    if kind == "dense":
        return cls.from_vectors(np.stack([r.vectors for r in records]), ids, metas, **index_kwargs)
    return cls.from_vectors([r.vectors for r in records], ids, metas, **index_kwargs)


def write_shards_file(path: str | os.PathLike, kind: str, dim: int, names: Sequence[str]) -> None:
    """Write ``shards.json`` (through a temporary file renamed into place)."""
    folder = Path(path)
    text = json.dumps(
        {"format_version": SHARDS_VERSION, "kind": kind, "dim": dim, "shards": sorted(names)}, indent=2
    )
    tmp = folder / f".{SHARDS_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, folder / SHARDS_FILE)


class ShardedIndex:
    """Several shards searched as one index.

    Args:
        shards: loaded indexes of one kind and dimension, with disjoint ids.
    """

    def __init__(self, shards: Sequence[Any]) -> None:
        self.kind, self.dim = _same_kind(shards)
        self.shards = list(shards)

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def __contains__(self, doc_id: object) -> bool:
        return any(doc_id in s for s in self.shards)

    def ids(self) -> list[str]:
        """Every document id, shard after shard."""
        return [i for s in self.shards for i in s.ids()]

    def get(self, ids: Sequence[str]) -> list[Record]:
        """The stored documents for ``ids`` in that order; missing ids are skipped."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, not a single string")
        found: dict[str, Record] = {}
        for shard in self.shards:
            found.update((r.id, r) for r in shard.get(ids))
        return [found[i] for i in ids if i in found]

    def search(
        self, queries: Any, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[list[Hit]]:
        """Search every shard and keep the ``k`` best hits per query; tied scores in shard
        order, then each shard's own order (slot, i.e. insertion order, as every search path).

        Args:
            queries: what the shards' ``search`` takes (query vectors for a dense index,
                query token matrices for a multi-vector index).
            k: hits per query (>= 1).
            filter: metadata filter, applied in every shard.
            **kwargs: other options of the shards' ``search`` (``exhaustive``, ...).
        """
        k = check_k(k)
        per_shard = [s.search(queries, k=k, filter=filter, **kwargs) for s in self.shards]
        merged = []
        for hits in zip(*per_shard, strict=True):
            pool = [h for shard_hits in hits for h in shard_hits]  # shard after shard, each ranked
            merged.append(sorted(pool, key=lambda h: -h.score)[:k])  # stable: ties keep that order
        return merged

    def merged(self, **index_kwargs: Any) -> Any:
        """One index with every document (see :func:`merge_indexes`)."""
        return merge_indexes(self.shards, **index_kwargs)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save as a sharded folder (``shard-00000``... and ``shards.json``), atomically."""
        names = [f"shard-{i:05d}" for i in range(len(self.shards))]

        def write(folder: Path) -> None:
            for name, shard in zip(names, self.shards, strict=True):
                shard.save(folder / name)
            write_shards_file(folder, self.kind, self.dim, names)

        write_version(path, write)  # a new version beside the live one, then one atomic switch

    @classmethod
    def load(cls, path: str | os.PathLike, use_gpu: bool | None = None) -> ShardedIndex:
        """Load a sharded folder written by :meth:`save` or by the Ray index builder.

        Raises:
            IndexFormatError: a missing or bad ``shards.json``, a shard of another kind or
                dimension, or a shard that does not load. A save that switches versions while
                this reads is retried (see :func:`~.persistence.read_live`).
        """
        return cls(read_live(path, lambda folder: _read_shards(folder, use_gpu), marker=SHARDS_FILE))


def _read_shards(root: Path, use_gpu: bool | None) -> list[Any]:
    """The shards of the version folder ``root`` of a sharded folder (see :meth:`ShardedIndex.load`)."""
    file = root / SHARDS_FILE
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
        names, kind, dim = list(spec["shards"]), spec["kind"], spec["dim"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{file}: missing or unreadable ({exc})") from exc
    if spec.get("format_version") != SHARDS_VERSION:
        raise IndexFormatError(f"{file}: format_version {spec.get('format_version')!r} is not supported")
    if kind not in INDEX_CLASSES or not names:
        raise IndexFormatError(f"{file}: kind {kind!r} with {len(names)} shards")
    shards = []
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise IndexFormatError(f"{file}: bad shard name {name!r}")
        shards.append(INDEX_CLASSES[kind].load(root / name, expected_dim=dim, use_gpu=use_gpu))
    return shards
