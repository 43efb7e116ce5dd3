"""A ColBERT multi-vector index with string ids, metadata and filters.

The token vectors of every document sit in a contiguous :class:`~.token_store.TokenStore`
(fp32, fp16, int8 or PQ codes), or in a :class:`~.plaid.PlaidStore` (centroid id + residual
bits) for ``index_type="plaid"``. A search goes as the index type does (flat scan, PLAID,
FAISS candidates: :mod:`.multivector_search`); all MaxSim goes through
:func:`vllm_pool.maxsim_kernel.segment_maxsim`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from vllm_pool.engine.model_thread import with_the_model

from .arrays import is_single_matrix, l2_normalize, token_matrices
from .candidates import maxsim_slots, scan_device, scan_store, top_k
from .colbert import check_texts
from .encoders import encode_in_batches
from .index_base import DocumentIndex
from .multivector_load import load_device, restore_candidates
from .multivector_search import check_search_settings, search_by_type
from .persistence import files_of, load_index_files, open_index, save_index_files
from .plaid import PlaidStore
from .registry import check_ids_and_metadatas
from .token_store import TokenStore
from .types import Filter, Hit, IndexFormatError, Metadata, check_k

logger = logging.getLogger(__name__)

TokenMatrices = Sequence[Any]
"""Documents or queries: a list of ``[L_i, D]`` arrays, or one padded ``[N, L, D]`` array."""


class MultiVectorIndex(DocumentIndex):
    """Late-interaction (ColBERT) index with string ids, metadata and filters.

    The default (flat index, fp32 storage) is exact: every document is scored with MaxSim in
    one pass over the index rows. IVF / HNSW candidate indexes (``candidates_per_token``
    neighbours per query token, then exact MaxSim over the candidates) and compressed token
    storage trade recall for speed or memory (see ``benchmarks/colbert_recall.py``). All
    public methods hold one re-entrant lock, so searches and adds from several threads are safe.

    Args:
        dim: token vector dimension.
        index_type: ``"flat"`` (default: exact, every document scanned in blocks of the
            token store), ``"plaid"`` (compressed PLAID-style index, see :mod:`.plaid`), or a
            FAISS candidate index: ``"ivf"``, ``"ivfpq"``, ``"hnsw"`` or a factory string. IVF
            is trained once 1,024 token vectors are in (exact search until then) and
            re-trained with an automatic ``nlist`` as the index grows 4x.
        storage: token store codec: ``"fp32"`` (default, exact), ``"fp16"``, ``"int8"``,
            ``"pq"``.
        candidates_per_token: FAISS neighbours fetched per query token (IVF / HNSW indexes).
        normalize: L2-normalize document and query token vectors.
        nlist: IVF lists (``None``: automatic).
        nprobe: IVF lists searched.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth.
        pq_m: PQ sub-quantizers of the ``"pq"`` storage, a divisor of ``dim`` (``None``: automatic).
        pq_nbits: PQ bits per code, 1 to 16 (codes of ``ceil(pq_m * pq_nbits / 8)`` bytes).
        use_gpu: ``None`` = candidate index on GPU when FAISS sees one, ``True`` = require,
            ``False`` = CPU.
        exact_filter_limit: filtered searches matching at most this many documents score
            all of them exactly instead of using candidates.
        model_name: the model that made the vectors (saved in the manifest).
        nbits: residual bits per dimension of ``index_type="plaid"`` (1, 2 or 4).
        ncells: cells probed per query token by ``"plaid"`` (``None``: 1 for ``k <= 10``,
            2 up to 100, else 4).
        ndocs: ``"plaid"`` keeps ``ndocs`` candidates by pruned centroid-only scores, then
            ``ndocs / 4`` (at least ``k``) by full centroid-only scores, scored exactly
            (``None``: 256 / 1024 / ``max(4k, 4096)`` by ``k`` as above).
        centroid_score_threshold: ``"plaid"``'s pruned stage counts only the cells whose
            best query-token score reaches it (``None``: 0.5 / 0.45 / 0.4 by ``k``).
        device: torch device of exact MaxSim and of ``"plaid"``: with a GPU (the default
            when torch sees one) the decoded token vectors are also held there in fp16 and the
            flat scan runs there (recall 1.0 while they fit); ``"cpu"`` runs the same torch
            code path on the CPU; ``None`` without a GPU reads the numpy rows.
    """

    kind = "multivector"
    rebuild_after = 10_000

    def __init__(
        self,
        dim: int,
        index_type: str = "flat",
        storage: str = "fp32",
        *,
        candidates_per_token: int = 256,
        normalize: bool = True,
        nlist: int | None = None,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_search: int = 256,
        pq_m: int | None = None,
        pq_nbits: int = 8,
        use_gpu: bool | None = None,
        exact_filter_limit: int = 2_000,
        model_name: str | None = None,
        nbits: int = 2,
        ncells: int | None = None,
        ndocs: int | None = None,
        centroid_score_threshold: float | None = None,
        device: str | None = None,
    ) -> None:
        config = {
            "index_type": index_type,
            "storage": storage,
            "candidates_per_token": check_k(candidates_per_token, "candidates_per_token"),
            "normalize": normalize,
            "nlist": nlist,
            "nprobe": nprobe,
            "hnsw_m": hnsw_m,
            "ef_search": ef_search,
            "pq_m": pq_m,
            "pq_nbits": pq_nbits,
            "exact_filter_limit": exact_filter_limit,
            "nbits": nbits,
            "ncells": ncells,
            "ndocs": ndocs,
            "centroid_score_threshold": centroid_score_threshold,
            "device": device,
        }
        super().__init__(dim, config, use_gpu, model_name)  # checks dim
        check_search_settings(config)
        if str(index_type).lower() == "plaid":
            if storage != "fp32":
                raise ValueError(
                    "index_type='plaid' keeps its own compressed codes: leave storage at 'fp32', "
                    f"got {storage!r}"
                )
            if not normalize:
                raise ValueError("index_type='plaid' needs normalize=True (its centroids are unit vectors)")
            self._store: TokenStore = PlaidStore(dim, nbits, device)
        else:
            self._store = TokenStore(dim, storage, pq_m, pq_nbits)
        self._device = scan_device(device, str(index_type).lower())
        self.config.update(pq_m=self._store.pq_m, pq_nbits=self._store.pq_nbits)  # as the store checked them

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_vectors(
        cls,
        doc_vectors: TokenMatrices,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Metadata] | None = None,
        **kwargs: Any,
    ) -> MultiVectorIndex:
        """Build an index from precomputed ``[L_i, D]`` token matrices."""
        docs = token_matrices(doc_vectors, None, None, "doc_vectors")
        if not docs:
            raise ValueError("doc_vectors is empty")
        index = cls(docs[0].shape[1], **kwargs)
        index.add(docs, ids, metadatas)
        return index

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        encoder: Any,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Metadata] | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> MultiVectorIndex:
        """Encode ``texts`` as ColBERT documents (with a progress bar) and index them.

        Args:
            texts: the documents.
            encoder: a :class:`~.colbert.ColBERTEncoder` (anything with
                ``encode_documents(texts) -> list[[L, D]]``).
            ids: string ids (default ``"0"``, ``"1"``, ...).
            metadatas: one dict per text.
            batch_size: texts per encoder call.
            **kwargs: options of :class:`MultiVectorIndex`.
        """
        if not isinstance(texts, str) and len(texts):  # (encode_in_batches rejects those two)
            check_texts(texts, "texts")  # a non-string named by the caller's position, before any batch
        batches = encode_in_batches(texts, encoder.encode_documents, batch_size, "encoding")
        docs = [doc for batch in batches for doc in batch]
        kwargs.setdefault("model_name", getattr(encoder, "model_name", None))
        return cls.from_vectors(docs, ids, metadatas, **kwargs)

    # -- mutation ------------------------------------------------------------------------
    @with_the_model  # torch work: where the CPU models run (one OpenMP team)
    def add(
        self,
        doc_vectors: TokenMatrices,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Metadata] | None = None,
        doc_mask: Any = None,
    ) -> list[str]:
        """Add documents; an id already present is overwritten.

        Args:
            doc_vectors: a list of ``[L_i, D]`` token matrices, or a padded ``[N, L, D]``
                array with ``doc_mask``.
            ids: ``N`` unique string ids (default: running numbers).
            metadatas: ``N`` JSON-serializable dicts (default: empty).
            doc_mask: ``[N, L]`` mask of real tokens for a padded array.

        Returns:
            The ids added.
        """
        docs = token_matrices(doc_vectors, doc_mask, self.dim, "doc_vectors")
        if self.config["normalize"]:
            docs = [l2_normalize(d) for d in docs]
        with self._lock:
            ids, metadatas = check_ids_and_metadatas(len(docs), ids, metadatas, self._registry)
            if not docs:
                return []
            replaced = [i for i in ids if i in self._registry]
            gone = np.asarray([self._registry.slot(i) for i in replaced], dtype=np.int64)
            n_gone = int(self._store.gather(gone)[2].sum()) if len(gone) else 0
            n_after = self._store.num_vectors - n_gone + sum(len(d) for d in docs)
            prepared = self._index_for_add(n_after, lambda: self._training_rows(gone, docs))  # may fail
            slots = self._registry.new_slots(len(docs))
            self._store.add(slots, docs)  # may train PQ / the PLAID codec, and fail: nothing changed yet
            self._drop_rows(self._registry.drop(replaced))  # the documents being overwritten
            if prepared is None and self._index is not None:
                labels = np.repeat(slots, [len(d) for d in docs])  # [T]
                self._index.add_with_ids(np.concatenate(docs), labels)
            for doc_id, slot, meta in zip(ids, slots, metadatas, strict=True):
                self._registry.put(doc_id, int(slot), meta)
            if prepared is not None:
                self._install(prepared)  # every live token vector into the new index
            else:
                self._maybe_rebuild()  # tombstones of the overwritten documents
            return ids

    def _training_rows(self, gone: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
        """The token vectors an add leaves in the index: the live documents' but ``gone``, then ``docs``."""
        kept = [int(s) for s in np.setdiff1d(self._registry.slots(), gone, assume_unique=True)]
        tokens = self._store.decode(kept)[0] if kept else np.zeros((0, self.dim), np.float32)
        return np.concatenate([tokens, *docs])

    def _uses_faiss(self) -> bool:
        """Flat and PLAID indexes search their own store; the others keep a FAISS index."""
        return str(self.config["index_type"]).lower() not in ("flat", "plaid")

    def _faiss_codec(self) -> str:
        """The FAISS codec matching the token storage, so compressed storage saves memory."""
        return {"fp16": "SQfp16", "int8": "SQ8"}.get(self.config["storage"], "Flat")

    def _forget(self, slots: np.ndarray) -> int:
        n_tokens = int(self._store.gather(slots)[2].sum())
        self._store.remove(slots)
        return n_tokens

    def _live_rows(self) -> int:
        return self._store.num_vectors

    def _live_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """The decoded token vectors of the live documents and their slots as labels."""
        slots = self._registry.slots()
        tokens, lengths = self._store.decode(slots)
        return tokens, np.repeat(slots, lengths)

    # -- reading -------------------------------------------------------------------------
    @property
    def num_vectors(self) -> int:
        """Live document token vectors."""
        return self._store.num_vectors

    def _stored(self, slot: int) -> np.ndarray:
        """Decoded ``[L, D]`` token vectors of one document."""
        return self._store.decode([slot])[0]

    @with_the_model  # torch work: where the CPU models run (one OpenMP team)
    def search(
        self,
        queries: TokenMatrices,
        k: int = 10,
        filter: Filter | None = None,
        query_mask: Any = None,
        candidates_per_token: int | None = None,
        exhaustive: bool = False,
    ) -> list[list[Hit]]:
        """Find the ``k`` documents with the highest MaxSim score for each query.

        Args:
            queries: a list of ``[Lq_i, D]`` query token matrices, one ``[Lq, D]`` matrix
                (a single query), or a padded ``[Q, Lq, D]`` array with ``query_mask``.
            k: hits per query (>= 1).
            filter: metadata filter (dict of equal values, or a callable on the metadata).
            query_mask: ``[Q, Lq]`` mask of real query tokens for a padded array.
            candidates_per_token: override of the index's setting for this call (``None``: the index's).
            exhaustive: score every (matching) document instead of FAISS candidates.

        Returns:
            ``Q`` lists of at most ``k`` :class:`Hit`, best first.
        """
        k = check_k(k)
        k_tok = self.config["candidates_per_token"] if candidates_per_token is None else candidates_per_token
        k_tok = check_k(k_tok, "candidates_per_token")
        if is_single_matrix(queries):
            queries = [queries]
        qs = token_matrices(queries, query_mask, self.dim, "queries")
        if not qs:
            raise ValueError("queries is empty: give at least one query")
        if self.config["normalize"]:
            qs = [l2_normalize(q) for q in qs]
        with self._lock:
            if len(self._registry) == 0:
                return [[] for _ in qs]
            allowed = self._registry.allowed_slots(filter)
            if allowed is not None and len(allowed) <= self.config["exact_filter_limit"]:
                pool = np.asarray(sorted(allowed), dtype=np.int64)
                return [self._score(q, pool, k) for q in qs]
            allowed_arr = None if allowed is None else np.fromiter(allowed, np.int64, len(allowed))
            if exhaustive or self._index is None and self._uses_faiss():  # IVF not trained yet
                found = scan_store(self._store, qs, k, allowed_arr, self._device)
            else:  # by index type (:mod:`.multivector_search`)
                want = min(k, len(self._registry) if allowed is None else len(allowed))
                found = search_by_type(
                    self._store, self._index, self.config, self._device, qs, k, k_tok, allowed_arr, want,
                    self._keep(allowed), self._tombstones,
                )  # fmt: skip
            return [self._hits(*f, k) for f in found]

    def _keep(self, allowed: set[int] | None) -> Callable[[int], bool]:
        is_live = self._registry.is_live
        return is_live if allowed is None else (lambda s: is_live(s) and s in allowed)

    def _score(self, q: np.ndarray, slots: np.ndarray, k: int) -> list[Hit]:
        """Exact MaxSim of one query ``[Lq, D]`` against documents ``slots``; top ``k``."""
        if len(slots) == 0:
            return []
        return self._hits(slots, maxsim_slots(self._store, q, slots, self._device), k)

    def _hits(self, slots: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
        slots, scores = top_k(slots, scores, k)
        reg = self._registry
        return [Hit(reg.doc_id(int(s)), float(v), reg.metadata(int(s))) for s, v in zip(slots, scores)]

    def memory_usage(self) -> dict[str, float]:
        """Bytes held: token store, candidate index (serialized size), per token vector.

        For ``"plaid"`` the store counts the codes (centroid id + packed residual), the
        inverted list, the document table and the codec (centroids, buckets, lookup table).
        Not counted: the ids and metadata of the documents (Python objects, as for every type).
        """
        import faiss

        from .faiss_index import to_cpu

        with self._lock:
            n = max(self._store.num_vectors, 1)
            store = self._store.bytes_per_vector() * self._store.num_vectors
            cand = 0 if self._index is None else faiss.serialize_index(to_cpu(self._index)).nbytes
            return {
                "store_bytes": store,
                "candidate_index_bytes": float(cand),
                "bytes_per_vector_store": store / n,
                "bytes_per_vector_index": cand / n,
                "bytes_per_vector": (store + cand) / n,
            }

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save to the folder ``path`` (atomically replacing an existing one); locked for a snapshot only."""
        with self._saving:  # saves in call order
            with self._lock:
                docs = self._registry.to_json()
                files = files_of(self, docs, self._store.to_arrays(docs["slots"]), "candidates.faiss")
            save_index_files(path, files)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expected_dim: int | None = None,
        use_gpu: bool | None = None,
        device: str | None = None,
    ) -> MultiVectorIndex:
        """Load an index saved by :meth:`save`.

        Args:
            path: the index folder.
            expected_dim: raise :class:`IndexFormatError` unless the index has this dimension.
            use_gpu: as in :class:`MultiVectorIndex`.
            device: as in :class:`MultiVectorIndex`; ``None``: the saved one, or ``"cpu"`` (with
                a warning) when that is a CUDA device this machine does not have.
        """
        files = load_index_files(path, cls.kind, expected_dim)
        files.config["device"] = load_device(files.config.get("device"), device, path)
        index, registry = open_index(cls, files, path, use_gpu)
        try:
            index._store.load_arrays(registry.slots(), files.arrays)
        except (ValueError, KeyError) as exc:
            raise IndexFormatError(f"{path}: {exc}") from exc
        index._registry = registry
        restore_candidates(index, files, path, use_gpu)
        return index
