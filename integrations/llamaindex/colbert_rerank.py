"""`VllmPoolColBERTRerank`: a LlamaIndex node postprocessor that reranks by ColBERT MaxSim."""

from __future__ import annotations

from typing import Any

import llama_index.core.instrumentation as instrument
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from .. import _colbert
from ._base import EngineFields

dispatcher = instrument.get_dispatcher(__name__)


class VllmPoolColBERTRerank(EngineFields, BaseNodePostprocessor):
    """Rerank retrieved nodes by late interaction (ColBERT MaxSim), best first, keeping ``top_n``.

    The RAGatouille / PyLate ``rerank`` use case over a first-stage retriever's nodes. The
    encoder settings default (``None``) to the checkpoint's (colbert-ai ``artifact.metadata``,
    PyLate's config), else to the plain defaults. Emits LlamaIndex's rerank events.

    Example:
        >>> rerank = VllmPoolColBERTRerank(top_n=3)  # doctest: +SKIP
        >>> engine = index.as_query_engine(node_postprocessors=[rerank])  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    top_n: int = Field(default=2, gt=0, description="Number of nodes to return, best first.")
    keep_retrieval_score: bool = Field(
        default=False, description='Keep the first-stage score in node.metadata["retrieval_score"].'
    )
    batch_size: int = Field(default=64, gt=0, description="Nodes per engine call.")
    query_maxlen: int | None = Field(default=None, description="Query length in tokens (default 32).")
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
        settings = {name: getattr(self, name) for name in _colbert.ENCODER_SETTINGS}
        self._config = _colbert.resolve_config(self._engine.options, settings)

    @classmethod
    def class_name(cls) -> str:
        return "VllmPoolColBERTRerank"

    @property
    def colbert_config(self) -> Any:
        """The resolved ``ColBERTConfig``."""
        return self._config

    @property
    def encoder(self) -> Any:
        """The shared ``ColBERTEncoder`` of this model and these settings."""
        return _colbert.get_encoder(self._engine.options, self._config)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("VllmPoolColBERTRerank needs a query: pass query_bundle or query_str")
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model)
        )
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
            ranked = _colbert.rerank(
                self.encoder,
                query_bundle.query_str,
                texts,
                self.top_n,
                self.split_long_documents,
                self.window_overlap,
                self.batch_size,
            )
            new_nodes = []
            for i, score in ranked:
                if self.keep_retrieval_score:
                    nodes[i].node.metadata["retrieval_score"] = nodes[i].score
                new_nodes.append(NodeWithScore(node=nodes[i].node, score=score))
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
