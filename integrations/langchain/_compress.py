"""What both LangChain rerankers share: ``compress_documents`` over their ``rerank``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import Document


class RerankedCopies:
    """``compress_documents`` for a class whose ``rerank(texts, query)`` returns
    ``(index, score)`` pairs, best first."""

    def rerank(self, documents: Sequence[str], query: str) -> list[tuple[int, float]]:
        raise NotImplementedError

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
        return [(k, v) for k, v in super().__repr_args__() if v is not None]  # type: ignore[misc]
