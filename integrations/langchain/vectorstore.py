"""`VllmPoolVectorStore`: a LangChain ``VectorStore`` over the dense FAISS index."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from vllm_pool.retrievers.index_base import NotCopyable
from vllm_pool.retrievers.positions import UNCHANGED, caller_positions

from .._records import check_id_list, new_records, unpack, user_filter
from .._similarity import relevance_fn
from ._store_files import index_path, saved_index_path
from ._store_options import check_index_options, check_index_similarity, similarity_of
from ._store_search import EXACT_DISTANCE_LIMIT, above_threshold, check_threshold, ranked_hits

__all__ = ["EXACT_DISTANCE_LIMIT", "VllmPoolVectorStore"]


class VllmPoolVectorStore(NotCopyable, VectorStore):
    """Documents in a ``vllm_pool.retrievers.DenseIndex`` (FAISS, exact by default).

    Works with any LangChain ``Embeddings`` (``VllmPoolEmbeddings`` runs the model
    in-process). The store starts empty; adding a document with an existing id replaces
    it; deleting missing ids does nothing; scores are the model's Sentence Transformers
    similarity (``similarity_fn_name`` of ``VllmPoolEmbeddings``; cosine for other
    embeddings), higher is better: cosine and dot are searched exactly by inner product
    (of normalized vectors for cosine); euclidean and manhattan score every document exactly
    up to :data:`EXACT_DISTANCE_LIMIT` documents, and in a larger store rescore exactly the
    best ``max(4 * k, k + 16)`` candidates by inner product (the same ranking as euclidean
    for normalized embeddings only); ``filter`` is a dict with LangChain FAISS's operators
    (``$eq $ne $gt $gte $lt $lte $in $nin $and $or $not``, a list value meaning ``$in``)
    or a callable on the metadata; ``score_threshold`` (a search keyword, also in
    ``as_retriever(search_kwargs=...)``) keeps scores ``>=`` it, as LangChain's FAISS does for
    its similarity scores. Saved with :meth:`save_local` as ``.npy`` / FAISS / JSON
    files (no pickle). Thread-safe.

    Args:
        embedding: the LangChain embeddings.
        index: an existing ``DenseIndex`` (normalized exactly for cosine); default: made on the first add.
        **index_kwargs: options of a new ``DenseIndex``, checked at once (``index_type="hnsw"``,
            ``nprobe``, ``storage="int8" | "binary"`` with ``rescore_multiplier`` / ``rescore``...).

    Example:
        >>> store = VllmPoolVectorStore(VllmPoolEmbeddings())
        >>> store.add_texts(["a cat", "a dog"], ids=["1", "2"])
        ['1', '2']
        >>> store.similarity_search_with_score("kitten", k=1)  # doctest: +SKIP
        [(Document(id='1', metadata={}, page_content='a cat'), 0.62)]
    """

    save_hint = ("save_local(folder)", "VllmPoolVectorStore.load_local(folder, embeddings)")

    def __init__(self, embedding: Embeddings, *, index: Any = None, **index_kwargs: Any) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a LangChain Embeddings, got {type(embedding).__name__}")
        if index is not None and index_kwargs:
            raise ValueError("give either an index or index options, not both")
        self._embedding = embedding
        # before anything is embedded: the first add's DenseIndex options; an index's normalize
        check_index_options(type(self).__name__, index_kwargs, lambda: self.similarity_fn_name)
        if index is not None:
            check_index_similarity(index, self.similarity_fn_name)
        self._index = index
        self._index_kwargs = index_kwargs
        self._lock = threading.RLock()

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings of the store."""
        return self._embedding

    @property
    def similarity_fn_name(self) -> str:
        """The similarity of the scores: the embeddings' ``similarity_fn_name``, else cosine."""
        return similarity_of(self._embedding)

    @property
    def index(self) -> Any:
        """The ``DenseIndex`` (``None`` until the first add)."""
        return self._index

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    def _index_for(self, dim: int) -> Any:
        with self._lock:
            if self._index is None:
                from vllm_pool.retrievers import DenseIndex

                kwargs = {
                    "model_name": getattr(self._embedding, "model", None),
                    # cosine: inner products of normalized vectors; the others keep raw vectors
                    "normalize": self.similarity_fn_name == "cosine",
                    **self._index_kwargs,
                }
                self._index = DenseIndex(dim, **kwargs)
            return self._index

    # -- writing -------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and add texts; an existing id is overwritten.

        Args:
            texts: the texts.
            metadatas: one JSON-serializable dict per text.
            ids: one id per text (``None`` entries and a missing list get new UUIDs).
            **kwargs: unused.

        Returns:
            The ids, in order.
        """
        texts, ids, metas = new_records(texts, metadatas, ids)
        if not texts:
            return []
        with caller_positions(0, "texts", UNCHANGED):  # every text embedded before the index changes
            vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        return self._add_vectors(vectors, ids, metas)

    def _add_vectors(self, vectors: np.ndarray, ids: list[str], metas: list[dict[str, Any]]) -> list[str]:
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"got {len(ids)} texts but embeddings of shape {list(vectors.shape)}")
        return self._index_for(vectors.shape[1]).add(vectors, ids, metas)

    def add_embeddings(
        self,
        text_embeddings: Iterable[tuple[str, list[float]]],
        metadatas: list[dict] | None = None,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add precomputed ``(text, embedding)`` pairs (LangChain FAISS's ``add_embeddings``).

        Args:
            text_embeddings: pairs of text and vector (e.g. ``zip(texts, vectors)``).
            metadatas: one JSON-serializable dict per pair.
            ids: one id per pair (``None`` entries and a missing list get new UUIDs).
            **kwargs: unused.

        Returns:
            The ids, in order.
        """
        if isinstance(text_embeddings, (str, bytes)) or isinstance(text_embeddings, Mapping):
            raise TypeError("text_embeddings must be (text, embedding) pairs, e.g. zip(texts, vectors)")
        pairs = list(text_embeddings)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"text_embeddings[{i}] must be a (text, embedding) pair, got {pair!r:.60}")
        texts, ids, metas = new_records([t for t, _ in pairs], metadatas, ids)
        if not texts:
            return []
        vectors = np.asarray([v for _, v in pairs], dtype=np.float32)
        return self._add_vectors(vectors, ids, metas)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (missing ids are ignored); ``ids=None`` deletes all.

        Raises:
            TypeError: ``ids`` is a single string (``delete("12")`` is not ``["1", "2"]``).
        """
        check_id_list(ids)
        with self._lock:
            if self._index is None:
                return True
            # everything: the index stays, with its settings, training and int8 ranges
            self._index.remove(self._index.ids() if ids is None else list(ids))
            return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents for ``ids`` (missing ids are skipped; a single string raises)."""
        check_id_list(ids)
        if self._index is None:
            return []
        return [
            Document(id=r.id, page_content=text, metadata=meta)
            for r in self._index.get(list(ids))
            for text, meta in [unpack(r.metadata)]
        ]

    # -- searching -----------------------------------------------------------------------
    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` most similar documents to a vector, with the store's scores, best first.

        ``score_threshold`` (keyword): keep only scores ``>=`` it (LangChain FAISS's keyword).
        """
        flt = user_filter(filter)  # checked even when the store is empty
        threshold = check_threshold(kwargs.get("score_threshold"))
        index = self._index
        if index is None or len(index) == 0:
            return []
        ranked = ranked_hits(index, self.similarity_fn_name, embedding, k, flt)
        out = []
        for hit, score in ranked:
            text, meta = unpack(hit.metadata)
            out.append((Document(id=hit.id, page_content=text, metadata=meta), score))
        return above_threshold(out, threshold)

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` most similar documents to ``query`` with the store's scores (higher is better).

        Args:
            query: the query text.
            k: how many documents.
            filter: a LangChain FAISS-style dict (``{"year": {"$gte": 2023}}``, a list value
                meaning ``$in``, ``$and`` / ``$or`` / ``$not``...) or a callable on the metadata.
            **kwargs: ``score_threshold``: keep only scores ``>=`` it (LangChain FAISS's keyword).
        """
        user_filter(filter)  # checked even when the store is empty
        check_threshold(kwargs.get("score_threshold"))
        if self._index is None or len(self._index) == 0:
            return []
        vector = self._embedding.embed_query(query)
        return self.similarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    def similarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> list[Document]:
        """The ``k`` most similar documents to ``query``, best first (``score_threshold``: as above)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` most similar documents to a vector, best first (``score_threshold``: as above)."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Diverse results: ``fetch_k`` candidates, then maximal marginal relevance."""
        candidates = self.similarity_search_with_score_by_vector(embedding, fetch_k, filter)
        index = self._index
        if not candidates or index is None:
            return []
        records = {r.id: r.vectors for r in index.get([d.id for d, _ in candidates])}
        candidates = [(d, s) for d, s in candidates if d.id in records]  # deleted meanwhile by another thread
        if not candidates:
            return []
        vectors = np.asarray([records[d.id] for d, _ in candidates], dtype=np.float32)
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), vectors, lambda_mult, k)
        return [candidates[i][0] for i in chosen]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Diverse results for ``query`` (see :meth:`max_marginal_relevance_search_by_vector`)."""
        if self._index is None or len(self._index) == 0:
            return []
        vector = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """The store's scores mapped to a relevance in [0, 1] (``_similarity.relevance_fn``)."""
        return relevance_fn(self.similarity_fn_name)

    # -- building and persistence --------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> VllmPoolVectorStore:
        """A new store holding ``texts`` (``kwargs``: options of a new ``DenseIndex``)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def from_embeddings(
        cls,
        text_embeddings: Iterable[tuple[str, list[float]]],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> VllmPoolVectorStore:
        """A new store holding precomputed ``(text, embedding)`` pairs (as LangChain's FAISS).

        ``embedding`` embeds the queries; ``kwargs`` are options of a new ``DenseIndex``.
        """
        store = cls(embedding, **kwargs)
        store.add_embeddings(text_embeddings, metadatas, ids)
        return store

    def merge_from(self, target: VllmPoolVectorStore) -> None:
        """Add every document of ``target`` (text, metadata, stored vector) to this store.

        As in LangChain's FAISS, an id present in both stores is an error; then nothing is
        added. The stores must hold vectors of the same dimension and similarity.

        Raises:
            TypeError: ``target`` is not a ``VllmPoolVectorStore``.
            ValueError: shared ids, or another dimension or similarity.
        """
        if not isinstance(target, VllmPoolVectorStore):
            raise TypeError(f"merge_from takes a VllmPoolVectorStore, got {type(target).__name__}")
        if target is self or target._index is None or len(target._index) == 0:
            return
        other = target._index
        records = other.get(other.ids())
        with self._lock:
            mine = self._index
            if mine is not None:
                if mine.dim != other.dim or mine.config["normalize"] != other.config["normalize"]:
                    theirs, ours = other.config["normalize"], mine.config["normalize"]
                    raise ValueError(
                        f"cannot merge a store of {other.dim}-d vectors (normalize={theirs}) "
                        f"into one of {mine.dim}-d vectors (normalize={ours})"
                    )
                shared = [r.id for r in records if r.id in mine]
                if shared:
                    raise ValueError(
                        f"cannot merge: {len(shared)} ids exist in both stores (first: {shared[0]!r}); "
                        "nothing was added"
                    )
            vectors = np.stack([r.vectors for r in records]).astype(np.float32)
            self._add_vectors(vectors, [r.id for r in records], [r.metadata for r in records])

    def save_local(self, folder_path: str | os.PathLike, index_name: str = "index") -> None:
        """Save the store to ``folder_path/index_name`` (LangChain FAISS's signature).

        The index is a folder of ``.npy`` / FAISS / JSON files (vectors, ids, texts,
        metadata), written atomically (a reader sees the old or the new store, never a mix);
        nothing is pickled, unlike LangChain's ``index.pkl``. Several stores can share a
        folder under different ``index_name``.
        """
        path = index_path(folder_path, index_name)
        with self._lock:
            if self._index is None:
                self._index_for(len(self._embedding.embed_query("dimension probe")))
            self._index.save(path)

    @classmethod
    def load_local(
        cls,
        folder_path: str | os.PathLike,
        embeddings: Embeddings,
        index_name: str = "index",
        *,
        allow_dangerous_deserialization: bool = False,
        **kwargs: Any,
    ) -> VllmPoolVectorStore:
        """Load a store saved by :meth:`save_local` (LangChain FAISS's signature).

        Args:
            folder_path: the folder given to :meth:`save_local`.
            embeddings: the embeddings for queries (the same model as when saved).
            index_name: the name given to :meth:`save_local`.
            allow_dangerous_deserialization: accepted for compatibility and ignored: loading
                never unpickles anything (JSON, ``.npy`` and FAISS files only), so it is
                safe for folders of unknown origin.
            **kwargs: options of ``DenseIndex.load`` (``use_gpu``, ``expected_dim``).

        Raises:
            vllm_pool.retrievers.IndexFormatError: no store there; a LangChain FAISS folder
                (``index.faiss`` + ``index.pkl``) is named as such.
            ValueError: the index's vectors are not the embeddings' similarity's (normalized for cosine).
        """
        from vllm_pool.retrievers import DenseIndex

        del allow_dangerous_deserialization  # nothing is unpickled
        path = saved_index_path(folder_path, index_name)
        index = DenseIndex.load(path, **kwargs)
        check_index_similarity(index, similarity_of(embeddings), str(path))  # before the store exists
        return cls(embeddings, index=index)
