"""`VllmPoolEmbeddings`: LangChain ``Embeddings`` on the in-process engine."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor

from .._engines import embed_texts, resolve_prefix
from .._similarity import similarity_fn_name
from ._base import EngineFields


class VllmPoolEmbeddings(EngineFields, Embeddings):
    """Embed documents and queries with any pooling model, in-process.

    Example:
        >>> from vllm_pool.integrations.langchain import VllmPoolEmbeddings
        >>> emb = VllmPoolEmbeddings()  # all-MiniLM-L6-v2, offline
        >>> len(emb.embed_query("hello"))
        384

    Instances with the same engine fields share one loaded engine; calls from several
    threads are safe, the async methods run in an executor (the event loop keeps running),
    and instances survive ``pickle`` and ``copy.deepcopy``.
    """

    batch_size: int = 256
    """Texts per engine call (the engine also batches by a token budget inside a call)."""
    normalize: bool | None = None
    """L2-normalize the embeddings (``None``: the model's default, e.g. its Normalize module)."""
    dimensions: int | None = None
    """Matryoshka output size (the model must support it)."""
    truncate_prompt_tokens: int | None = None
    """Cut each text to this many tokens (``-1``: the model's limit); see ``truncate`` otherwise."""
    query_instruction: str | None = None
    """Text put before every query, e.g. ``"Represent this sentence for searching relevant passages: "``."""
    document_instruction: str | None = None
    """Text put before every document."""
    query_prompt_name: str | None = None
    """Name of a Sentence Transformers prompt of the model used for queries (when no
    ``query_instruction``). Without either, the model's ``"query"`` prompt or default prompt."""
    document_prompt_name: str | None = None
    """Name of a Sentence Transformers prompt of the model used for documents (when no
    ``document_instruction``). Without either, the model's ``"document"`` / ``"passage"`` prompt."""
    show_progress: bool = False
    """Show a progress bar while embedding documents."""

    @property
    def similarity_fn_name(self) -> str:
        """The model's Sentence Transformers similarity function (``cosine`` by default;
        ``dot``, ``euclidean`` or ``manhattan``): what ``VllmPoolVectorStore`` scores with."""
        return similarity_fn_name(self.llm)

    def _prefix(self, kind: str) -> str:
        if kind == "query":
            return resolve_prefix(self.llm, self.query_instruction, self.query_prompt_name, "query")
        return resolve_prefix(self.llm, self.document_instruction, self.document_prompt_name, "document")

    def _embed(self, texts: list[str], kind: str, show_progress: bool) -> list[list[float]]:
        return embed_texts(
            self.llm,
            texts,
            prefix=self._prefix(kind),
            dimensions=self.dimensions,
            normalize=self.normalize,
            truncate_prompt_tokens=self.truncate_prompt_tokens,
            truncate=self.truncate,
            batch_size=self.batch_size,
            show_progress=show_progress,
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents.

        Args:
            texts: the documents.

        Returns:
            One list of Python floats per document.
        """
        return self._embed(texts, "document", self.show_progress)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query.

        Args:
            text: the query.

        Returns:
            A list of Python floats.
        """
        if not isinstance(text, str):
            raise TypeError(f"embed_query expects a string, got {type(text).__name__}")
        return self._embed([text], "query", False)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, run in an executor so the event loop keeps going."""
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, run in an executor so the event loop keeps going."""
        return await run_in_executor(None, self.embed_query, text)

    def __repr_args__(self) -> Any:
        return [(k, v) for k, v in super().__repr_args__() if v is not None]
