"""What both LlamaIndex rerankers share: ``_postprocess_nodes`` with LlamaIndex's rerank
events, over each class's ``_rank``."""

from __future__ import annotations

import llama_index.core.instrumentation as instrument
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle

from .._rerank_inputs import check_top_n

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
        nodes = with_scores(nodes)
        model = self.model  # type: ignore[attr-defined]
        top_n = len(nodes) if check_top_n(self.top_n) is None else self.top_n  # type: ignore[attr-defined]
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


def with_scores(nodes: list[NodeWithScore] | list[BaseNode]) -> list[NodeWithScore]:
    """``nodes`` as ``NodeWithScore`` (bare nodes and documents get ``score=None``).

    Raises:
        TypeError: a single string, or an item that is not a node (named by its position).
    """
    if isinstance(nodes, str):
        raise TypeError("nodes must be a list of NodeWithScore or nodes, not a single string")
    out = []
    for i, n in enumerate(nodes):
        if isinstance(n, NodeWithScore):
            out.append(n)
        elif isinstance(n, BaseNode):
            out.append(NodeWithScore(node=n, score=None))
        else:
            raise TypeError(
                f"nodes[{i}] must be a NodeWithScore or a node (TextNode, Document), got "
                f"{type(n).__name__}" + (": wrap texts as TextNode(text=...)" if isinstance(n, str) else "")
            )
    return out
