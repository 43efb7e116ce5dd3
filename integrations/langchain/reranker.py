"""`VllmPoolReranker`: a LangChain document compressor that reranks with ``LLM.score``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document

from .._engines import score_pairs
from ._base import EngineFields


class VllmPoolReranker(EngineFields, BaseDocumentCompressor):
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

    top_n: int | None = 3
    """How many documents to return (``None``: all of them, reordered)."""
    score_threshold: float | None = None
    """Drop documents scoring below this value."""
    batch_size: int = 256
    """Documents per engine call."""
    truncate_prompt_tokens: int | None = None
    """Cut each pair (or text) to this many tokens."""

    def rerank(self, documents: Sequence[str], query: str) -> list[tuple[int, float]]:
        """Score texts against ``query``.

        Args:
            documents: the texts.
            query: the query.

        Returns:
            ``(index, score)`` pairs, best first, limited by ``top_n`` / ``score_threshold``.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        scores = score_pairs(
            self.llm,
            query,
            list(documents),
            truncate_prompt_tokens=self.truncate_prompt_tokens,
            batch_size=self.batch_size,
        )
        ranked = sorted(enumerate(scores), key=lambda pair: -pair[1])
        if self.score_threshold is not None:
            ranked = [(i, s) for i, s in ranked if s >= self.score_threshold]
        return ranked if self.top_n is None else ranked[: self.top_n]

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
