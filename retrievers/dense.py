"""A dense vector index: one normalized vector per document, searched by inner product."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import quantization, quantized_search
from .arrays import as_float32_matrix, l2_normalize
from .encoders import TextEmbedder, encode_in_batches
from .faiss_index import REFINE, lossy_codes
from .index_base import DocumentIndex
from .mapped_rows import MappedRows
from .persistence import (
    check_array,
    files_of,
    load_index_files,
    open_index,
    restore_faiss,
    save_index_files,
)
from .ranking import faiss_top_k, top_k
from .registry import check_ids_and_metadatas
from .types import Filter, Hit, IndexFormatError, Metadata, check_k

logger = logging.getLogger(__name__)


class DenseIndex(DocumentIndex):
    """FAISS inner-product index over (by default L2-normalized) vectors, with string ids,
    metadata and filters.

    Vectors are also kept in a numpy array (for ``get``, filtered search and rebuilds).
    All public methods hold one re-entrant lock, so searches and adds from several threads
    are safe.

    Args:
        dim: vector dimension.
        index_type: ``"flat"`` (exact, default), ``"hnsw"``, ``"ivf"`` (trained once enough
            vectors are in: 1,024, or ``nlist`` of them; exact search until then), or any
            ``faiss.index_factory`` string.
        normalize: L2-normalize added and query vectors (inner product = cosine).
        nlist: IVF lists (``None``: automatic from the first add's size).
        nprobe: IVF lists searched.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth.
        use_gpu: ``None`` = GPU when FAISS sees one, ``True`` = require, ``False`` = CPU.
        exact_filter_limit: filtered searches over at most this many matching documents are
            computed exactly with numpy instead of through FAISS.
        model_name: the model that made the vectors (saved in the manifest).
        storage: ``"fp32"`` (default), or quantized codes as Sentence Transformers'
            ``quantize_embeddings``: ``"int8"`` (1 byte per dimension, ranges calibrated on
            ``calibration_embeddings`` or the first add) or ``"binary"`` (1 bit per
            dimension, 1/32 of fp32). Quantized indexes keep only the codes (no float copy,
            no FAISS index: the codes are searched exhaustively, see :mod:`.quantization`)
            and need ``index_type="flat"``; ``get`` returns the decoded vectors.
        rescore_multiplier: quantized search: ``k * rescore_multiplier`` candidates on the
            codes, rescored with the float query (ST's ``semantic_search_faiss``).
        rescore: what the candidates are rescored against: ``"codes"`` (as ST: the
            dequantized int8 / the bits) or ``"float"`` (the float32 vectors, kept in a
            memory-mapped temporary file, on disk, not in memory: exact scores).
        calibration_embeddings: ``[N, D]`` vectors giving the int8 ranges (min / max per
            dimension); default: the first add's vectors.
    """

    kind = "dense"

    def __init__(
        self,
        dim: int,
        index_type: str = "flat",
        *,
        normalize: bool = True,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        use_gpu: bool | None = None,
        exact_filter_limit: int = 20_000,
        model_name: str | None = None,
        storage: str = "fp32",
        rescore_multiplier: int = 4,
        calibration_embeddings: Any = None,
        rescore: str = "codes",
    ) -> None:
        storage = quantized_search.check_settings(storage, index_type, rescore_multiplier, rescore)
        config = {
            "index_type": index_type,
            "normalize": normalize,
            "nlist": nlist,
            "nprobe": nprobe,
            "hnsw_m": hnsw_m,
            "ef_search": ef_search,
            "exact_filter_limit": exact_filter_limit,
            "storage": storage,
            "rescore_multiplier": rescore_multiplier,
            "rescore": rescore,
        }
        super().__init__(dim, config, use_gpu, model_name)
        width = quantization.code_width(storage, dim)
        self._vectors = np.zeros((0, width), dtype=quantization.code_dtype(storage))  # [rows, D] or codes
        self._ranges: np.ndarray | None = None  # int8: [2, D] calibration min / max
        use_floats = storage != "fp32" and rescore == "float"
        self._floats = MappedRows(dim) if use_floats else None  # rescoring rows, on disk
        if calibration_embeddings is not None and storage == "int8":
            calib = as_float32_matrix(calibration_embeddings, dim, "calibration_embeddings")
            self._ranges = quantization.calibration_ranges(l2_normalize(calib) if normalize else calib)
        self._row_of: dict[int, int] = {}  # slot -> row of self._vectors
        self._n_rows = 0

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_vectors(
        cls,
        vectors: Any,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Metadata] | None = None,
        **kwargs: Any,
    ) -> DenseIndex:
        """Build an index from precomputed ``[N, D]`` vectors (``kwargs`` go to ``__init__``)."""
        arr = as_float32_matrix(vectors, None, "vectors")
        index = cls(arr.shape[1], **kwargs)
        index.add(arr, ids, metadatas)
        return index

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        embedder: TextEmbedder,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Metadata] | None = None,
        batch_size: int = 256,
        **kwargs: Any,
    ) -> DenseIndex:
        """Embed ``texts`` with ``embedder`` (with a progress bar) and index them.

        Args:
            texts: the documents.
            embedder: a :class:`~.encoders.TextEmbedder`, e.g. ``EngineTextEmbedder(llm)``.
            ids: string ids (default ``"0"``, ``"1"``, ...).
            metadatas: one dict per text.
            batch_size: texts per ``embed_texts`` call.
            **kwargs: options of :class:`DenseIndex`.
        """
        chunks = encode_in_batches(texts, embedder.embed_texts, batch_size, "embedding")
        kwargs.setdefault("model_name", getattr(embedder, "model_name", None))
        return cls.from_vectors(np.concatenate(chunks), ids, metadatas, **kwargs)

    # -- mutation ------------------------------------------------------------------------
    def add(
        self,
        vectors: Any,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Metadata] | None = None,
    ) -> list[str]:
        """Add documents; an id already present is overwritten.

        Args:
            vectors: ``[N, D]`` array (numpy, torch or nested lists).
            ids: ``N`` unique string ids (default: running numbers).
            metadatas: ``N`` JSON-serializable dicts (default: empty).

        Returns:
            The ids added.
        """
        arr = as_float32_matrix(vectors, self.dim, "vectors")
        if self.config["normalize"]:
            arr = l2_normalize(arr)
        with self._lock:
            ids, metadatas = check_ids_and_metadatas(len(arr), ids, metadatas, self._registry)
            if len(arr) == 0:
                return []
            storage = self.config["storage"]
            ranges = self._ranges
            if storage == "int8" and ranges is None:
                ranges = quantization.calibration_ranges(arr)  # may fail: nothing changed yet
            rows = quantization.encode(arr, storage, ranges)
            replaced = [i for i in ids if i in self._registry]
            n_after = len(self._registry) - len(replaced) + len(arr)
            # a new FAISS index (the first, or an IVF re-trained) is trained on what the index
            # will hold; it may fail (a bad type, too few vectors): nothing has changed yet
            prepared = self._index_for_add(n_after, lambda: self._training_rows(replaced, arr))
            if self._quantized:
                self._ranges = ranges
            self._drop_rows(self._registry.drop(replaced))  # the documents being overwritten
            slots = self._registry.new_slots(len(arr))
            if prepared is None and self._index is not None:
                self._index.add_with_ids(arr, slots)
            self._append_rows(slots, rows, arr)
            for doc_id, slot, meta in zip(ids, slots, metadatas, strict=True):
                self._registry.put(doc_id, int(slot), meta)
            if prepared is not None:
                self._install(prepared)  # every live vector into the new index
            else:
                self._maybe_rebuild()  # tombstones of the overwritten documents
            return ids

    def _training_rows(self, replaced: list[str], arr: np.ndarray) -> np.ndarray:
        """The vectors an add leaves in the index: the live ones it does not overwrite, then ``arr``."""
        gone = {self._registry.slot(i) for i in replaced}
        kept = np.asarray([s for s in self._registry.slots() if int(s) not in gone], dtype=np.int64)
        return np.concatenate([self._live_vectors(kept), arr])

    def _forget(self, slots: np.ndarray) -> int:
        for s in slots:
            del self._row_of[int(s)]
        return len(slots)

    def _live_rows(self) -> int:
        return len(self._registry)

    def _append_rows(self, slots: np.ndarray, arr: np.ndarray, floats: np.ndarray) -> None:
        if self._n_rows + len(arr) > len(self._vectors):
            live = len(self._row_of)
            if live < self._n_rows // 2:  # mostly garbage: compact instead of growing
                self._compact()
            cap = max(2 * len(self._vectors), self._n_rows + len(arr), 64)
            grown = np.zeros((cap, self._vectors.shape[1]), dtype=self._vectors.dtype)
            grown[: self._n_rows] = self._vectors[: self._n_rows]
            self._vectors = grown
        self._vectors[self._n_rows : self._n_rows + len(arr)] = arr
        if self._floats is not None:
            self._floats.write(self._n_rows, floats)
        for i, slot in enumerate(slots):
            self._row_of[int(slot)] = self._n_rows + i
        self._n_rows += len(arr)

    def _compact(self) -> None:
        slots = list(self._row_of)
        rows = np.asarray([self._row_of[s] for s in slots], dtype=np.int64)
        self._vectors = self._vectors[rows].copy() if len(rows) else self._vectors[:0].copy()
        if self._floats is not None:
            self._floats.keep(rows)
        self._row_of = {s: i for i, s in enumerate(slots)}
        self._n_rows = len(slots)

    def _live_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        slots = self._registry.slots()
        return self._live_vectors(slots), slots

    def _uses_faiss(self) -> bool:
        return not self._quantized  # quantized codes are searched exhaustively

    def _live_vectors(self, slots: np.ndarray) -> np.ndarray:
        """The stored rows of ``slots``: float vectors, or codes for a quantized index."""
        rows = np.asarray([self._row_of[int(s)] for s in slots], dtype=np.int64)
        return self._vectors[rows] if len(rows) else self._vectors[:0].copy()

    @property
    def _quantized(self) -> bool:
        return self.config["storage"] != "fp32"

    # -- reading -------------------------------------------------------------------------
    def _stored(self, slot: int) -> np.ndarray:
        if self._floats is not None:
            return self._floats.take(np.array([self._row_of[slot]]))[0]
        row = self._vectors[self._row_of[slot]][None, :]
        return quantization.decode(row, self.config["storage"], self._ranges, self.dim)[0].copy()

    def search(self, query_vectors: Any, k: int = 4, filter: Filter | None = None) -> list[list[Hit]]:
        """Find the ``k`` documents with the highest inner product for each query.

        Args:
            query_vectors: ``[Q, D]`` (or one ``[D]`` vector).
            k: hits per query (>= 1).
            filter: metadata filter (dict of equal values, or a callable on the metadata).

        Returns:
            ``Q`` lists of at most ``k`` :class:`Hit`, best first.
        """
        k = check_k(k)
        q = np.asarray(query_vectors) if not hasattr(query_vectors, "detach") else query_vectors
        if getattr(q, "ndim", 0) == 1:
            q = q[None, :]
        q = as_float32_matrix(q, self.dim, "query_vectors")
        if len(q) == 0:
            raise ValueError("query_vectors is empty: give at least one query vector")
        if self.config["normalize"]:
            q = l2_normalize(q)
        with self._lock:
            if len(self._registry) == 0:
                return [[] for _ in range(len(q))]
            allowed = self._registry.allowed_slots(filter)
            if self._quantized:
                return self._search_quantized(q, k, allowed)
            if allowed is not None and len(allowed) <= self.config["exact_filter_limit"]:
                return self._search_exact(q, k, np.fromiter(allowed, np.int64, len(allowed)))
            if self._index is None:  # an IVF index waiting for training data: exact
                return self._search_exact(q, k, self._pool(allowed))
            return self._search_faiss(q, k, allowed)

    def _pool(self, allowed: set[int] | None) -> np.ndarray:
        """The slots a search may return."""
        return self._registry.slots() if allowed is None else np.fromiter(allowed, np.int64, len(allowed))

    def _search_exact(self, q: np.ndarray, k: int, slots: np.ndarray) -> list[list[Hit]]:
        if len(slots) == 0:
            return [[] for _ in range(len(q))]
        scores = q @ self._live_vectors(slots).T  # [Q, n]
        found = (top_k(slots, row, k) for row in scores)  # ties: insertion order, as every path
        return [[self._hit(int(s), float(v)) for s, v in zip(*f, strict=True)] for f in found]

    def _search_quantized(self, q: np.ndarray, k: int, allowed: set[int] | None) -> list[list[Hit]]:
        """Candidates on the codes, then exact scores of the float query (:mod:`.quantized_search`)."""
        no_garbage = allowed is None and len(self._row_of) == self._n_rows  # codes searched in place
        pool = None if no_garbage else self._pool(allowed)
        found = quantized_search.search_codes(
            q, k, self._vectors, self._row_of, self._n_rows, pool, self._floats, self.config, self._ranges
        )
        return [[self._hit(slot, score) for slot, score in hits] for hits in found]

    def _search_faiss(self, q: np.ndarray, k: int, allowed: set[int] | None) -> list[list[Hit]]:
        """FAISS candidates; an index of lossy codes (PQ, SQ...) gives ``REFINE * k`` of them,
        scored exactly on the stored vectors (FAISS's ``IndexRefineFlat``): exact scores."""
        refine = REFINE if lossy_codes(self.config["index_type"]) else 1
        want = min(refine * k, len(self._registry) if allowed is None else len(allowed))
        k_search = refine * k + 1 + self._tombstones if allowed is None else 4 * refine * k  # ties

        def usable(slot: int) -> bool:
            return slot >= 0 and self._registry.is_live(slot) and (allowed is None or slot in allowed)

        found = faiss_top_k(self._index, q, refine * k, want, k_search, usable)
        if refine > 1:  # the candidates' exact scores
            found = [
                f if f is None else top_k(f[0], self._live_vectors(f[0]) @ q[i], k)
                for i, f in enumerate(found)
            ]
        pool = None  # queries FAISS cannot answer (IVF's probed lists, GPU's k limit): exact
        results = []
        for i, f in enumerate(found):
            if f is None:
                pool = self._pool(allowed) if pool is None else pool
                results.append(self._search_exact(q[i : i + 1], k, pool)[0])
            else:
                results.append([self._hit(int(s), float(v)) for s, v in zip(*f, strict=True)])
        return results

    def _hit(self, slot: int, score: float) -> Hit:
        return Hit(self._registry.doc_id(slot), score, self._registry.metadata(slot))

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save to the folder ``path`` (atomically replacing an existing one). The index is
        locked while its snapshot is taken, not while the files are written."""
        with self._saving:  # saves in call order
            with self._lock:
                if self._tombstones:
                    self._rebuild()  # keeps the tombstones (saved with the index) when it cannot rebuild
                docs = self._registry.to_json()
                slots = np.asarray(docs["slots"], dtype=np.int64)
                arrays = {"vectors.npy": self._live_vectors(slots)}
                if self._quantized:  # the codes (and int8 ranges) instead of float vectors
                    arrays = {"codes.npy": arrays["vectors.npy"]}
                    if self._ranges is not None:
                        arrays["ranges.npy"] = self._ranges.copy()
                    if self._floats is not None:
                        arrays["vectors.npy"] = self._floats.take([self._row_of[int(s)] for s in slots])
                files = files_of(self, docs, arrays, "index.faiss")
            save_index_files(path, files)

    @classmethod
    def load(
        cls, path: str | os.PathLike, expected_dim: int | None = None, use_gpu: bool | None = None
    ) -> DenseIndex:
        """Load an index saved by :meth:`save`.

        Args:
            path: the index folder.
            expected_dim: raise :class:`IndexFormatError` unless the index has this dimension.
            use_gpu: as in :class:`DenseIndex`.
        """
        files = load_index_files(path, cls.kind, expected_dim)
        index, registry = open_index(cls, files, path, use_gpu)
        if index._quantized:
            vectors, index._ranges, floats = quantization.load_arrays(
                files, path, index.config["storage"], index._floats is not None
            )
            if floats is not None:
                index._floats.write(0, floats)
        else:
            vectors = check_array(files, "vectors.npy", 2, files.dim)
        if len(vectors) != len(registry):
            raise IndexFormatError(f"{path}/vectors.npy: {len(vectors)} rows for {len(registry)} documents")
        index._registry = registry
        index._vectors = np.ascontiguousarray(vectors, dtype=index._vectors.dtype)
        index._row_of = {int(s): i for i, s in enumerate(registry.slots())}
        index._n_rows = len(vectors)
        restore_faiss(index, files, "index.faiss", np.ones(len(registry), np.int64), path, use_gpu)
        return index
