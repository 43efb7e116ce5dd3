"""What the dense and the multi-vector index share: documents by string id with metadata,
one re-entrant lock, a FAISS index built on the first add, and removal with tombstones.

A subclass says how a document's vectors are kept (``_forget`` drops them and says how
many FAISS rows they had, ``_stored`` reads them back, ``_live_matrix`` gives all live rows
with their labels) and whether it keeps a FAISS index at all (``_uses_faiss``).

A new FAISS index (the first one, or an IVF re-trained as it grows) is trained *before* an
add changes anything, so an add whose training fails leaves the index as it was. A rebuild
that drops tombstones never fails half-way: without live rows the FAISS index is dropped
(the next add builds one), and when the live rows are too few to train a new one the
current index is kept with its tombstones (searches skip removed documents).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .faiss_index import (
    build_index,
    check_faiss_settings,
    min_training_vectors,
    set_search_params,
    to_device,
    try_remove,
)
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
        check_faiss_settings(config["nlist"], config["nprobe"], config["hnsw_m"], config["ef_search"])
        self.dim = dim
        self.config = config
        self.use_gpu = use_gpu
        self.model_name = model_name
        self._lock = threading.RLock()
        self._saving = threading.Lock()  # saves in call order; searches go on while one writes
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

    def _live_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """The FAISS rows of the live documents ``float32 [n, D]`` and their labels ``int64 [n]``."""
        raise NotImplementedError

    def _uses_faiss(self) -> bool:
        """Whether the index keeps a FAISS index."""
        return True

    def _faiss_codec(self) -> str:
        """How a named ``"ivf"`` / ``"hnsw"`` FAISS index stores its vectors."""
        return "Flat"

    # -- the FAISS index -------------------------------------------------------------------
    def _new_index(self, train: np.ndarray) -> Any:
        """A new, trained, empty FAISS index (``ValueError`` when it cannot be trained on ``train``)."""
        cfg = self.config
        codec = self._faiss_codec()
        index = build_index(cfg["index_type"], self.dim, train, cfg["nlist"], cfg["hnsw_m"], codec)
        set_search_params(index, cfg["nprobe"], cfg["ef_search"])
        return to_device(index, self.use_gpu)

    def _trains(self) -> bool:
        """Whether the FAISS index is an IVF index that needs training data."""
        return str(self.config["index_type"]).lower() in ("ivf", "ivfpq")

    def _build_due(self, n: int) -> bool:
        """Whether an IVF index holding ``n`` rows should be trained now: the first time once
        there is enough training data, then again (automatic ``nlist``) when it has grown
        :attr:`retrain_growth` times past its training set, so that ``nlist`` follows the data."""
        if self._index is None:
            cfg = self.config
            return n >= min_training_vectors(str(cfg["index_type"]), cfg["nlist"], self.min_train)
        return self.config["nlist"] is None and n >= self.retrain_growth * max(self._trained_on, 1)

    def _index_for_add(self, n_after: int, training: Callable[[], np.ndarray]) -> tuple[Any, int] | None:
        """Before an add changes anything: a new trained (empty) FAISS index to hold every
        document once the add is done (see :meth:`_install`), or ``None`` to add to the current one.

        Args:
            n_after: live FAISS rows once the add is done.
            training: gives the rows to train on (the live ones the add keeps, and the new ones).

        Raises:
            ValueError: the index cannot be trained (the add must then change nothing).
        """
        if not self._uses_faiss():
            return None
        if self._trains():
            if not self._build_due(n_after):
                return None
        elif self._index is not None:
            return None
        train = training()
        if self._index is not None:
            logger.info("re-training the IVF index: %d vectors, trained on %d", len(train), self._trained_on)
        return self._new_index(train), len(train)

    def _install(self, prepared: tuple[Any, int]) -> None:
        """After an add: fill the index from :meth:`_index_for_add` with every live row and use it."""
        index, trained_on = prepared
        vecs, labels = self._live_matrix()
        if len(vecs):
            index.add_with_ids(vecs, labels)
        self._index, self._trained_on, self._tombstones = index, trained_on, 0

    def _rebuild(self) -> bool:
        """Recreate the FAISS index from the live rows, dropping tombstones.

        Without live rows the FAISS index is dropped (the next add builds a new one). When a new
        index cannot be trained on the live rows (too few for IVF / PQ) or built, the current
        one is kept with its tombstones, with a warning. Returns whether the tombstones are gone.
        """
        if not self._uses_faiss():
            return False
        vecs, labels = self._live_matrix()
        if len(vecs) == 0:
            self._index, self._trained_on, self._tombstones = None, 0, 0
            return True
        logger.info("rebuilding the %s FAISS index over %d vectors", self.kind, len(vecs))
        try:
            index = self._new_index(vecs)
            index.add_with_ids(vecs, labels)
        except (ValueError, RuntimeError, MemoryError) as exc:
            if self._index is None:
                raise
            logger.warning(
                "could not rebuild the %s FAISS index over %d vectors (%s): keeping the current one "
                "and its %d removed vectors, which searches skip",
                self.kind,
                len(vecs),
                exc,
                self._tombstones,
            )
            return False
        self._index, self._trained_on, self._tombstones = index, len(vecs), 0
        return True

    def _drop_rows(self, slots: np.ndarray) -> None:
        """Forget the stored rows of ``slots`` (already dropped from the registry) and remove
        them from the FAISS index, or count them as tombstones where it cannot remove."""
        rows = self._forget(slots)
        if self._index is not None and not try_remove(self._index, slots):
            self._tombstones += rows

    def _maybe_rebuild(self) -> None:
        """Rebuild once tombstones pass the limit, or drop the FAISS index once no row is live."""
        if self._index is None or not self._tombstones:
            return
        limit = max(self.rebuild_fraction * self._live_rows(), self.rebuild_after)
        if self._tombstones > limit or self._live_rows() == 0:
            self._rebuild()

    # -- shared --------------------------------------------------------------------------
    def remove(self, ids: Sequence[str]) -> int:
        """Remove documents by id (missing ids are ignored); return how many were removed."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, not a single string")
        with self._lock:
            slots = self._registry.drop(ids)
            if len(slots) == 0:
                return 0
            self._drop_rows(slots)
            self._maybe_rebuild()
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
