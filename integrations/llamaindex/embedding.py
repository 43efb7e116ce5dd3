"""`VllmPoolEmbedding`: a LlamaIndex ``BaseEmbedding`` on the in-process engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import ConfigDict, Field

from .._engines import embed_texts, resolve_prefix
from ._base import EngineFields

_CALLER_TEXTS: ContextVar[tuple[list[str], dict[int, int]] | None] = ContextVar(
    "vllm_pool_llamaindex_texts", default=None
)
"""The list given to ``(a)get_text_embedding_batch`` and the first position of each of its
objects (by ``id``), while LlamaIndex embeds it in batches."""


@contextmanager
def _caller_texts(texts: list[str]) -> Iterator[None]:
    first: dict[int, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(id(t), i)
    token = _CALLER_TEXTS.set((texts, first))  # the list too: its objects keep their ids
    try:
        yield
    finally:
        _CALLER_TEXTS.reset(token)


def _caller_positions(batch: list[str]) -> list[int] | None:
    """Where each text of a batch sits in the caller's list (found by identity: LlamaIndex
    passes the caller's objects), or None outside a batch call. LlamaIndex cuts the list
    into ``embed_batch_size`` batches and leaves cached texts out: with these positions an
    error names the caller's ``texts[i]``, not the batch's."""
    caller = _CALLER_TEXTS.get()
    if caller is None:
        return None
    first = caller[1]
    positions = [first.get(id(t), -1) for t in batch]
    return None if -1 in positions else positions


class VllmPoolEmbedding(EngineFields, BaseEmbedding):
    """Embed queries and texts with any pooling model, in-process.

    ``_get_text_embeddings`` sends a whole batch (``embed_batch_size`` texts) to the
    engine at once; the async methods run in a worker thread so the event loop keeps going.
    Pickling keeps only the public fields, and LlamaIndex re-runs ``__init__`` on unpickle
    (e.g. in ``IngestionPipeline(num_workers=2)``): the engine comes back from the
    per-process cache, shared by every instance with the same engine fields.

    Example:
        >>> from llama_index.core import Settings
        >>> Settings.embed_model = VllmPoolEmbedding()  # all-MiniLM-L6-v2, offline
    """

    model_config = ConfigDict(
        extra="forbid", protected_namespaces=("pydantic_model_",), arbitrary_types_allowed=True
    )

    embed_batch_size: int = Field(default=256, gt=0, description="Texts per engine call.")
    normalize: bool | None = Field(
        default=None, description="L2-normalize (None: the model's default, e.g. its Normalize module)."
    )
    dimensions: int | None = Field(default=None, description="Matryoshka output size.")
    truncate_prompt_tokens: int | None = Field(
        default=None, description="Cut each text to this many tokens (-1: the model's limit)."
    )
    query_instruction: str | None = Field(default=None, description="Text put before every query.")
    text_instruction: str | None = Field(default=None, description="Text put before every document text.")
    query_prompt_name: str | None = Field(
        default=None,
        description="Sentence Transformers prompt of the model for queries (when no query_instruction); "
        'without either, the model\'s "query" prompt or its default prompt.',
    )
    text_prompt_name: str | None = Field(
        default=None,
        description="Sentence Transformers prompt of the model for texts (when no text_instruction); "
        'without either, the model\'s "document" / "passage" prompt or its default prompt.',
    )
    show_progress: bool = Field(
        default=False, description="Show one progress bar per batch embedding call (LlamaIndex's)."
    )

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.model_name = self.model  # model_name is an alias of model: it reports what loaded

    @classmethod
    def class_name(cls) -> str:
        return "VllmPoolEmbedding"

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[list[float]]:
        """LlamaIndex's batched embedding, with its one progress bar also when ``show_progress``
        is set on this instance (the engine calls inside show none of their own)."""
        texts = texts if isinstance(texts, (list, str)) else list(texts)  # a generator: read once
        with _caller_texts(texts):  # errors name texts[i] of this list
            return super().get_text_embedding_batch(texts, show_progress or self.show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[list[float]]:
        """Async :meth:`get_text_embedding_batch` (one progress bar over the call)."""
        texts = texts if isinstance(texts, (list, str)) else list(texts)
        with _caller_texts(texts):
            return await super().aget_text_embedding_batch(
                texts, show_progress or self.show_progress, **kwargs
            )

    def _embed(self, texts: list[str], kind: str, positions: list[int] | None = None) -> list[list[float]]:
        if kind == "query":
            prefix = resolve_prefix(self.llm, self.query_instruction, self.query_prompt_name, "query")
        else:
            prefix = resolve_prefix(self.llm, self.text_instruction, self.text_prompt_name, "document")
        return embed_texts(
            self.llm,
            texts,
            prefix=prefix,
            dimensions=self.dimensions,
            normalize=self.normalize,
            truncate_prompt_tokens=self.truncate_prompt_tokens,
            truncate=self.truncate,
            batch_size=self.embed_batch_size,
            positions=positions,
        )

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], "query")[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text], "text")[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        texts = list(texts)
        return self._embed(texts, "text", _caller_positions(texts))

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
