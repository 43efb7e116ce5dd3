"""`VllmPoolReranker`: a LangChain document compressor that reranks with ``LLM.score``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import BaseDocumentCompressor, Document

from .._engines import score_pairs
from .._rerank_inputs import texts_of, warn_if_bi_encoder
from ._base import EngineFields
from ._compress import RerankedCopies


class VllmPoolReranker(EngineFields, RerankedCopies, BaseDocumentCompressor):
    """Rerank documents against a query, best first.

    With a cross-encoder (e.g. ``model="BAAI/bge-reranker-v2-m3"``) each (query, document)
    pair is scored by the model; with a bi-encoder (e.g. the default all-MiniLM-L6-v2) the
    score is the cosine of the two embeddings. Returns copies of the documents with
    ``metadata["relevance_score"]``; the inputs are not changed. Use it as the
    ``base_compressor`` of a ``ContextualCompressionRetriever``.

    Example:
        >>> reranker = VllmPoolReranker(top_n=3)
        >>> reranker.compress_documents(docs, "how do I parse JSON?")  # doctest: +SKIP
    """

    batch_size: int = 256
    """Documents per engine call."""
    truncate_prompt_tokens: int | None = None
    """Cut each pair (or text) to this many tokens."""

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        warn_if_bi_encoder(self.llm, type(self).__name__)

    def rerank(self, documents: Sequence[str | Document], query: str) -> list[tuple[int, float]]:
        """Score texts against ``query``.

        Args:
            documents: the texts (or ``Document`` objects: their ``page_content``).
            query: the query.

        Returns:
            ``(index, score)`` pairs, best first, limited by ``top_n`` / ``score_threshold``.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        scores = score_pairs(
            self.llm,
            query,
            texts_of(documents),
            truncate_prompt_tokens=self.truncate_prompt_tokens,
            truncate=self.truncate,
            batch_size=self.batch_size,
        )
        return self._ranked(sorted(enumerate(scores), key=lambda pair: -pair[1]))
