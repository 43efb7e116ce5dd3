"""`VllmPoolColBERTReranker`: a LangChain document compressor that reranks by ColBERT MaxSim."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict

from .. import _colbert
from .._rerank_inputs import texts_of
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

    batch_size: int = 64
    """Documents per engine call."""

    def rerank(self, documents: Sequence[str | Document], query: str) -> list[tuple[int, float]]:
        """MaxSim scores of texts (or ``Document`` objects) against ``query``: ``(index, score)``
        pairs, best first, limited by ``top_n`` / ``score_threshold`` (a MaxSim value)."""
        ranked = _colbert.rerank(
            self.encoder,
            query,
            texts_of(documents),
            None,
            self.split_long_documents,
            self.window_overlap,
            self.batch_size,
            self.truncate,
        )
        return self._ranked(ranked)
