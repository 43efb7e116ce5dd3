"""What the dense and the multi-vector index share: documents by string id with metadata,
one re-entrant lock, a FAISS index built on the first add, and removal with tombstones.

A subclass says how a document's vectors are kept (``_forget`` drops them and says how
many FAISS rows they had, ``_stored`` reads them back) and how to rebuild its FAISS index.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .faiss_index import build_index, set_search_params, to_device, try_remove
from .registry import Registry
from .types import Record


class DocumentIndex:
    """Base of :class:`~.dense.DenseIndex` and :class:`~.multivector.MultiVectorIndex`."""

    kind = "base"
    rebuild_after = 1000
    """Tombstones tolerated (at least; more when more vectors are live) before a rebuild."""

    def __init__(
        self, dim: int, config: dict[str, Any], use_gpu: bool | None, model_name: str | None
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.config = config
        self.use_gpu = use_gpu
        self.model_name = model_name
        self._lock = threading.RLock()
        self._registry = Registry()
        self._index: Any = None  # built on the first add (IVF needs training data)
        self._tombstones = 0  # vectors still in FAISS whose document was removed

    # -- hooks ---------------------------------------------------------------------------
    def _forget(self, slots: np.ndarray) -> int:
        """Drop the stored vectors of ``slots``; return how many FAISS rows they had."""
        raise NotImplementedError

    def _stored(self, slot: int) -> np.ndarray:
        """The stored vector(s) of one document."""
        raise NotImplementedError

    def _live_rows(self) -> int:
        """FAISS rows of the live documents."""
        raise NotImplementedError

    def _rebuild(self) -> None:
        """Recreate the FAISS index from the live documents (drops tombstones)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------
    def _new_index(self, train: np.ndarray) -> Any:
        cfg = self.config
        index = build_index(cfg["index_type"], self.dim, train, cfg["nlist"], cfg["hnsw_m"])
        set_search_params(index, cfg["nprobe"], cfg["ef_search"])
        return to_device(index, self.use_gpu)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id (missing ids are ignored); return how many were removed."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, not a single string")
        with self._lock:
            slots = self._registry.drop(ids)
            if len(slots) == 0:
                return 0
            rows = self._forget(slots)
            if not try_remove(self._index, slots):
                self._tombstones += rows
                if self._tombstones > max(self._live_rows(), self.rebuild_after):
                    self._rebuild()
            return len(slots)

    def __len__(self) -> int:
        return len(self._registry)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._registry

    def ids(self) -> list[str]:
        """The ids of the stored documents, in the order they were added."""
        with self._lock:
            return [self._registry.doc_id(int(s)) for s in self._registry.slots()]

    def get(self, ids: Sequence[str]) -> list[Record]:
        """Return the stored documents for ``ids`` in that order; missing ids are skipped."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, not a single string")
        with self._lock:
            out = []
            for doc_id in ids:
                slot = self._registry.slot(doc_id)
                if slot is not None:
                    out.append(Record(doc_id, self._registry.metadata(slot), self._stored(slot)))
            return out
