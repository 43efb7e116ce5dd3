"""`VllmPoolRerank`: a LlamaIndex node postprocessor that reranks with ``LLM.score``."""

from __future__ import annotations

import llama_index.core.instrumentation as instrument
from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from .._engines import score_pairs
from ._base import EngineFields

dispatcher = instrument.get_dispatcher(__name__)


class VllmPoolRerank(EngineFields, BaseNodePostprocessor):
    """Rerank retrieved nodes against the query, best first, keeping ``top_n``.

    A cross-encoder (e.g. ``model="BAAI/bge-reranker-v2-m3"``) scores each (query, node)
    pair; a bi-encoder (e.g. the default all-MiniLM-L6-v2) gives the cosine of the
    embeddings. Emits LlamaIndex's rerank events (``ReRankStartEvent`` / ``ReRankEndEvent``
    and the ``RERANKING`` callback event).

    Example:
        >>> engine = index.as_query_engine(node_postprocessors=[VllmPoolRerank(top_n=3)])  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    top_n: int = Field(default=2, gt=0, description="Number of nodes to return, best first.")
    keep_retrieval_score: bool = Field(
        default=False, description='Keep the first-stage score in node.metadata["retrieval_score"].'
    )
    batch_size: int = Field(default=256, gt=0, description="Nodes per engine call.")
    truncate_prompt_tokens: int | None = Field(
        default=None, description="Cut each pair (or text) to this many tokens."
    )

    @classmethod
    def class_name(cls) -> str:
        return "VllmPoolRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("VllmPoolRerank needs a query: pass query_bundle or query_str")
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
            scores = score_pairs(
                self.llm,
                query_bundle.query_str,
                texts,
                truncate_prompt_tokens=self.truncate_prompt_tokens,
                batch_size=self.batch_size,
            )
            order = sorted(range(len(nodes)), key=lambda i: -scores[i])[: self.top_n]
            new_nodes = []
            for i in order:
                if self.keep_retrieval_score:
                    nodes[i].node.metadata["retrieval_score"] = nodes[i].score
                new_nodes.append(NodeWithScore(node=nodes[i].node, score=scores[i]))
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
