"""`VllmPoolColBERTReranker`: a LangChain document compressor that reranks by ColBERT MaxSim."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.documents import BaseDocumentCompressor
from pydantic import ConfigDict

from .. import _colbert
from ._colbert_fields import ColBERTFields
from ._compress import RerankedCopies


class VllmPoolColBERTReranker(ColBERTFields, RerankedCopies, BaseDocumentCompressor):
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
