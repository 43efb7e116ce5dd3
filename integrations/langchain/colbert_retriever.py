"""`VllmPoolColBERTRetriever`: a LangChain retriever over the ColBERT multi-vector index."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field
from vllm_pool.retrievers import MultiVectorIndex
from vllm_pool.retrievers.index_base import NotCopyable

from .. import _colbert
from .._records import check_id_list, user_filter
from ._colbert_fields import ColBERTFields


class VllmPoolColBERTRetriever(NotCopyable, ColBERTFields, BaseRetriever):
    """Late-interaction (ColBERT, MaxSim) retrieval with the engine's token embeddings.

    Build it with :meth:`from_texts`, :meth:`from_documents` or :meth:`load`; an instance
    made with the constructor alone starts with an empty index. Results are ``Document``
    objects with their ``id`` and the MaxSim score in ``metadata["score"]``.

    Example:
        >>> retriever = VllmPoolColBERTRetriever.from_texts(["a cat", "a dog"], k=1)
        >>> retriever.invoke("kitten")  # doctest: +SKIP
        [Document(id='...', metadata={'score': 20.1}, page_content='a cat')]
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    k: int = Field(default=4, ge=1)
    """Documents returned per query (``invoke(query, k=...)`` overrides it)."""
    filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None
    """Default metadata filter, as for LangChain's FAISS (``{"year": {"$gte": 2023}}``,
    ``$in``, ``$or``...) or a callable on the metadata; ``invoke(query, filter=...)`` overrides it."""
    batch_size: int = Field(default=64, ge=1)
    """Documents per engine call when adding."""
    show_progress: bool = False
    """Show a progress bar when adding documents."""
    index_kwargs: dict[str, Any] | None = None
    """Options of a new ``MultiVectorIndex`` (``index_type``, ``storage``, ``candidates_per_token``...)."""
    index: MultiVectorIndex | None = Field(default=None, exclude=True, repr=False)
    """The ``vllm_pool.retrievers.MultiVectorIndex`` (a new empty one when not given; another
    type is a ``ValidationError`` naming ``index``)."""

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        user_filter(self.filter)  # a bad default filter fails here, not at the first query
        if self.index is None:
            self.index = _colbert.new_index(self.llm, self.index_kwargs)
        if self.index.dim != self.llm.embedding_dim:
            raise ValueError(
                f"the index holds {self.index.dim}-d vectors "
                f"but {self.model} gives {self.llm.embedding_dim}-d vectors"
            )

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> VllmPoolColBERTRetriever:
        """Encode and index ``texts``.

        Args:
            texts: the documents.
            metadatas: one dict per text.
            ids: one id per text (default: new UUIDs).
            **kwargs: fields of the retriever (``model``, ``k``, ``query_maxlen``...).
        """
        if isinstance(texts, str):  # before list() would split it into letters
            raise TypeError("texts must be a list of strings, not a single string")
        retriever = cls(**kwargs)
        retriever.add_texts(list(texts), metadatas, ids)
        return retriever

    @classmethod
    def from_documents(cls, documents: Sequence[Document], **kwargs: Any) -> VllmPoolColBERTRetriever:
        """Encode and index LangChain documents (their ``id`` is kept when set)."""
        retriever = cls(**kwargs)
        retriever.add_documents(documents)
        return retriever

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Add documents (an existing id is overwritten); return their ids."""
        return _colbert.add_texts(
            self.index,
            self.encoder,
            texts,
            metadatas,
            ids,
            self.batch_size,
            self.show_progress,
            split_long_documents=self.split_long_documents,
            window_overlap=self.window_overlap,
            truncate=self.truncate,
        )

    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        """Add LangChain documents; return their ids."""
        docs = list(documents)
        texts = [d.page_content for d in docs]
        return self.add_texts(texts, [d.metadata for d in docs], [d.id for d in docs])

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id (missing ids are ignored); return how many were removed.

        Raises:
            TypeError: ``ids`` is a single string (``delete("12")`` is not ``["1", "2"]``).
        """
        check_id_list(ids)
        return _colbert.delete(self.index, ids)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save the index, the model id, its dimension and the encoder settings to the folder
        ``path`` (no pickle)."""
        _colbert.save(path, self.index, _colbert.settings_of(self))

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> VllmPoolColBERTRetriever:
        """Load a retriever saved by :meth:`save`.

        Args:
            path: the folder.
            **kwargs: fields to set or override (e.g. ``k``, ``device``); the model and the
                encoder settings are the saved ones.

        Raises:
            ValueError: a model or encoder setting in ``kwargs`` that differs from the saved one.
        """
        index, args = _colbert.load_arguments(path, kwargs)
        return cls(**args, index=index)

    # -- retrieval -----------------------------------------------------------------------
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[Document]:
        hits = _colbert.search(
            self.index,
            self.encoder,
            query,
            self.k if k is None else k,
            self.filter if filter is None else filter,
        )
        return [
            Document(id=doc_id, page_content=text, metadata={**meta, "score": score})
            for doc_id, text, meta, score in hits
        ]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: dict[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[Document]:
        """``ainvoke(query, k=..., filter=...)``: :meth:`_get_relevant_documents` in an
        executor, as LangChain's default does (which takes no ``k`` / ``filter``)."""
        return await run_in_executor(
            None,
            self._get_relevant_documents,
            query,
            run_manager=run_manager.get_sync(),
            k=k,
            filter=filter,
        )
