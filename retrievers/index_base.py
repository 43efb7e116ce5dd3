"""What the dense and the multi-vector index share: documents by string id with metadata,
one re-entrant lock, a FAISS index built on the first add, and removal with tombstones.

A subclass says how a document's vectors are kept (``_forget`` drops them and says how
many FAISS rows they had, ``_stored`` reads them back) and how to rebuild its FAISS index.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .faiss_index import build_index, set_search_params, to_device, try_remove
from .registry import Registry
from .types import Record

logger = logging.getLogger(__name__)


class NotCopyable:
    """An object that holds an index (FAISS indexes, memory-mapped rows and a lock do not
    copy): pickle and ``copy.deepcopy`` raise a ``TypeError`` that names the object and how
    to save and load it (:attr:`save_hint`) instead of failing on a lock deep inside."""

    save_hint = ("save(folder)", "load(folder)")

    def __reduce__(self) -> Any:
        save, load = self.save_hint
        raise TypeError(
            f"a {type(self).__name__} cannot be pickled or deep-copied (FAISS indexes, mapped files "
            f"and locks do not copy): write it with {save} and read it back with {load}"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self.__reduce__()


class DocumentIndex(NotCopyable):
    """Base of :class:`~.dense.DenseIndex` and :class:`~.multivector.MultiVectorIndex`."""

    kind = "base"
    rebuild_after = 1000
    """Tombstones tolerated (at least) before a rebuild."""
    rebuild_fraction = 0.25
    """Tombstones tolerated as a share of the live rows before a rebuild (HNSW cannot remove,
    and a graph a quarter full of removed nodes searches measurably slower)."""
    min_train = 1024
    """Vectors an IVF index waits for before it is trained (searches are exact until then)."""
    retrain_growth = 4
    """An IVF index with an automatic ``nlist`` is re-trained when it holds this many times
    the vectors it was trained on, so that ``nlist`` follows the data."""

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
        self._index: Any = None  # built after an add (IVF once it has enough training data)
        self._tombstones = 0  # vectors still in FAISS whose document was removed
        self._trained_on = 0  # vectors the FAISS index was built from

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
    def _new_index(self, train: np.ndarray, codec: str = "Flat") -> Any:
        cfg = self.config
        index = build_index(cfg["index_type"], self.dim, train, cfg["nlist"], cfg["hnsw_m"], codec)
        set_search_params(index, cfg["nprobe"], cfg["ef_search"])
        self._trained_on = len(train)
        return to_device(index, self.use_gpu)

    def _trains(self) -> bool:
        """Whether the FAISS index is an IVF index that needs training data."""
        return str(self.config["index_type"]).lower() in ("ivf", "ivfpq")

    def _maybe_build(self) -> None:
        """After an add: build the FAISS index once there is enough training data, and
        re-train an automatic-``nlist`` IVF index that has grown well past its training set."""
        n = self._live_rows()
        if not self._trains():
            return
        if self._index is None:
            nlist = self.config["nlist"]
            if n >= (self.min_train if nlist is None else max(nlist, 1)):
                self._rebuild()
        elif self.config["nlist"] is None and n >= self.retrain_growth * max(self._trained_on, 1):
            logger.info("re-training the IVF index: %d vectors, trained on %d", n, self._trained_on)
            self._rebuild()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id (missing ids are ignored); return how many were removed."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, not a single string")
        with self._lock:
            slots = self._registry.drop(ids)
            if len(slots) == 0:
                return 0
            rows = self._forget(slots)
            if self._index is not None and not try_remove(self._index, slots):
                self._tombstones += rows
                limit = max(self.rebuild_fraction * self._live_rows(), self.rebuild_after)
                if self._tombstones > limit:
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
