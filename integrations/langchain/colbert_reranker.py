"""`VllmPoolColBERTReranker`: a LangChain document compressor that reranks by ColBERT MaxSim."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict

from .. import _colbert
from ._colbert_fields import ColBERTFields


class VllmPoolColBERTReranker(ColBERTFields, BaseDocumentCompressor):
    """Rerank documents against a query by late interaction (ColBERT MaxSim), best first.

    The RAGatouille / PyLate ``rerank`` use case: a first-stage retriever (dense, BM25)
    finds candidates, the token vectors of the query and of each candidate order them.
    Returns copies of the documents with ``metadata["relevance_score"]``; the inputs are
    not changed. Use it as the ``base_compressor`` of a ``ContextualCompressionRetriever``.

    Example:
        >>> reranker = VllmPoolColBERTReranker(top_n=3)
        >>> reranker.compress_documents(docs, "how do I parse JSON?")  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    top_n: int | None = 3
    """How many documents to return (``None``: all of them, reordered)."""
    score_threshold: float | None = None
    """Drop documents scoring below this MaxSim value."""
    batch_size: int = 64
    """Documents per engine call."""

    def rerank(self, documents: Sequence[str], query: str) -> list[tuple[int, float]]:
        """MaxSim scores of texts against ``query``: ``(index, score)`` pairs, best first,
        limited by ``top_n`` / ``score_threshold``."""
        ranked = _colbert.rerank(
            self.encoder,
            query,
            documents,
            self.top_n,
            self.split_long_documents,
            self.window_overlap,
            self.batch_size,
        )
        if self.score_threshold is not None:
            ranked = [(i, s) for i, s in ranked if s >= self.score_threshold]
        return ranked

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``.

        Args:
            documents: the candidates (typically from a first-stage retriever).
            query: the query.
            callbacks: unused (LangChain's signature).

        Returns:
            Copies of the best documents, best first, each with ``metadata["relevance_score"]``.
        """
        docs = list(documents)
        if not docs:
            return []
        ranked = self.rerank([d.page_content for d in docs], query)
        return [
            docs[i].model_copy(update={"metadata": {**docs[i].metadata, "relevance_score": score}})
            for i, score in ranked
        ]

    def __repr_args__(self) -> Any:
        return [(k, v) for k, v in super().__repr_args__() if v is not None]
