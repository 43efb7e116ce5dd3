"""What both LangChain rerankers share: ``top_n`` / ``score_threshold`` and
``compress_documents`` over their ``rerank``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import Document
from pydantic import BaseModel, ConfigDict, field_validator

from .._rerank_inputs import check_top_n


class RerankedCopies(BaseModel):
    """``compress_documents`` for a class whose ``rerank(texts, query)`` returns
    ``(index, score)`` pairs, best first, at most ``top_n``."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    top_n: int | None = 3
    """How many documents to return (``None``: all of them, reordered)."""
    score_threshold: float | None = None
    """Drop documents scoring below this value."""

    @field_validator("top_n", mode="before")
    @classmethod
    def _positive_top_n(cls, value: Any) -> Any:
        return check_top_n(value)

    def rerank(self, documents: Sequence[str | Document], query: str) -> list[tuple[int, float]]:
        raise NotImplementedError

    def _ranked(self, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """``ranked`` (best first) cut by ``score_threshold`` and ``top_n``."""
        top_n = check_top_n(self.top_n)  # also when it was changed after construction
        if self.score_threshold is not None:
            ranked = [(i, s) for i, s in ranked if s >= self.score_threshold]
        return ranked if top_n is None else ranked[:top_n]

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

        Raises:
            TypeError: an item is not a ``Document`` (strings: use :meth:`rerank`).
        """
        if isinstance(documents, str):
            raise TypeError("compress_documents expects a list of Document objects, not a single string")
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(
                    f"compress_documents expects Document objects, documents[{i}] is a "
                    f"{type(doc).__name__}: wrap texts as Document(page_content=text), or call "
                    "rerank(texts, query) for (index, score) pairs"
                )
        if not docs:
            return []
        ranked = self.rerank(docs, query)
        return [
            docs[i].model_copy(update={"metadata": {**docs[i].metadata, "relevance_score": score}})
            for i, score in ranked
        ]

    def __repr_args__(self) -> Any:
        return [(k, v) for k, v in super().__repr_args__() if v is not None]
