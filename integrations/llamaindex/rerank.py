"""`VllmPoolRerank`: a LlamaIndex node postprocessor that reranks with ``LLM.score``."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor

from .._engines import score_pairs
from .._rerank_inputs import warn_if_bi_encoder
from ._base import EngineFields
from ._ranked_nodes import RankedNodes


class VllmPoolRerank(EngineFields, RankedNodes, BaseNodePostprocessor):
    """Rerank retrieved nodes against the query, best first, keeping ``top_n``.

    A cross-encoder (e.g. ``model="BAAI/bge-reranker-v2-m3"``) scores each (query, node)
    pair; a bi-encoder (e.g. the default all-MiniLM-L6-v2) gives the cosine of the
    embeddings. Emits LlamaIndex's rerank events (``ReRankStartEvent`` / ``ReRankEndEvent``
    and the ``RERANKING`` callback event).

    Example:
        >>> engine = index.as_query_engine(node_postprocessors=[VllmPoolRerank(top_n=3)])  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    top_n: int | None = Field(
        default=2, gt=0, description="Number of nodes to return, best first (None: all, reordered)."
    )
    keep_retrieval_score: bool = Field(
        default=False, description='Keep the first-stage score in node.metadata["retrieval_score"].'
    )
    batch_size: int = Field(default=256, gt=0, description="Nodes per engine call.")
    truncate_prompt_tokens: int | None = Field(
        default=None, description="Cut each pair (or text) to this many tokens."
    )

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        warn_if_bi_encoder(self.llm, type(self).__name__)

    @classmethod
    def class_name(cls) -> str:
        return "VllmPoolRerank"

    def _rank(self, query: str, texts: list[str]) -> list[tuple[int, float]]:
        scores = score_pairs(
            self.llm,
            query,
            texts,
            truncate_prompt_tokens=self.truncate_prompt_tokens,
            truncate=self.truncate,
            batch_size=self.batch_size,
        )
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[: self.top_n]
        return [(i, scores[i]) for i in order]
