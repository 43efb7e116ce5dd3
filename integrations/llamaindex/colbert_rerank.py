"""`VllmPoolColBERTRerank`: a LlamaIndex node postprocessor that reranks by ColBERT MaxSim."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor

from .. import _colbert
from ._base import EngineFields
from ._ranked_nodes import RankedNodes


class VllmPoolColBERTRerank(_colbert.ColBERTSettings, EngineFields, RankedNodes, BaseNodePostprocessor):
    """Rerank retrieved nodes by late interaction (ColBERT MaxSim), best first, keeping ``top_n``.

    The RAGatouille / PyLate ``rerank`` use case over a first-stage retriever's nodes. The
    encoder settings default (``None``) to the checkpoint's (colbert-ai ``artifact.metadata``,
    PyLate's config), else to the plain defaults. Emits LlamaIndex's rerank events.

    Example:
        >>> rerank = VllmPoolColBERTRerank(top_n=3)  # doctest: +SKIP
        >>> engine = index.as_query_engine(node_postprocessors=[rerank])  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    top_n: int | None = Field(
        default=2, gt=0, description="Number of nodes to return, best first (None: all, reordered)."
    )
    keep_retrieval_score: bool = Field(
        default=False, description='Keep the first-stage score in node.metadata["retrieval_score"].'
    )
    batch_size: int = Field(default=64, gt=0, description="Nodes per engine call.")
    query_maxlen: int | None = Field(
        default=None,
        description=(
            "Query length in tokens (default: the checkpoint's, 32 with query expansion, "
            "else the model's limit)."
        ),
    )
    doc_maxlen: int | None = Field(
        default=None, description="Maximum document (window) length in tokens (default 180)."
    )
    query_marker: str | None = Field(default=None, description="Token after [CLS] in queries.")
    doc_marker: str | None = Field(default=None, description="Token after [CLS] in documents.")
    mask_augment: bool | None = Field(
        default=None, description="Pad queries with [MASK] (ColBERT checkpoints: on; plain models: off)."
    )
    attend_to_expansion_tokens: bool | None = Field(
        default=None, description="Attend to the [MASK] tokens (colbert-ai / PyLate: off)."
    )
    skip_punctuation: bool | None = Field(
        default=None, description="Drop punctuation token vectors from documents (on)."
    )
    skiplist_words: list[str] | None = Field(
        default=None, description="Tokens to skip in documents (default: punctuation)."
    )
    normalize: bool | None = Field(default=None, description="L2-normalize the token vectors (on).")
    split_long_documents: bool = Field(
        default=False, description="Score a node longer than doc_maxlen by its best window."
    )
    window_overlap: int = Field(default=32, ge=0, description="Tokens shared by consecutive windows.")

    _config: Any = PrivateAttr(default=None)

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._resolve_colbert(_colbert.capped_encoder_settings(self))  # lengths cut to the model's

    @classmethod
    def class_name(cls) -> str:
        return "VllmPoolColBERTRerank"

    def _rank(self, query: str, texts: list[str]) -> list[tuple[int, float]]:
        return _colbert.rerank(
            self.encoder,
            query,
            texts,
            self.top_n,
            self.split_long_documents,
            self.window_overlap,
            self.batch_size,
            self.truncate,
        )
