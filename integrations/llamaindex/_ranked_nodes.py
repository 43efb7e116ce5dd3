"""What both LlamaIndex rerankers share: ``_postprocess_nodes`` with LlamaIndex's rerank
events, over each class's ``_rank``."""

from __future__ import annotations

import llama_index.core.instrumentation as instrument
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

dispatcher = instrument.get_dispatcher(__name__)


class RankedNodes:
    """``_postprocess_nodes`` for a node postprocessor with ``top_n``, ``keep_retrieval_score``,
    ``model`` and ``_rank(query, texts)`` returning ``(index, score)`` pairs, best first, at
    most ``top_n``. Emits ``ReRankStartEvent`` / ``ReRankEndEvent`` and the ``RERANKING``
    callback event."""

    def _rank(self, query: str, texts: list[str]) -> list[tuple[int, float]]:
        raise NotImplementedError

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError(f"{type(self).__name__} needs a query: pass query_bundle or query_str")
        top_n, model = self.top_n, self.model  # type: ignore[attr-defined]
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=model))
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        with self.callback_manager.event(  # type: ignore[attr-defined]
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: top_n,
            },
        ) as event:
            texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
            new_nodes = []
            for i, score in self._rank(query_bundle.query_str, texts):
                if self.keep_retrieval_score:  # type: ignore[attr-defined]
                    nodes[i].node.metadata["retrieval_score"] = nodes[i].score
                new_nodes.append(NodeWithScore(node=nodes[i].node, score=score))
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
