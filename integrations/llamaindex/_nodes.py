"""LlamaIndex nodes kept whole inside a ColBERT index, as LlamaIndex's vector stores keep them.

The index stores a node's text (``TEXT_KEY``) and its metadata (where filters see it); the
rest of the node (relationships, so ``ref_doc_id``, the excluded LLM / embed metadata keys,
templates, the node type) is LlamaIndex's own JSON (``node_to_metadata_dict``) under
``NODE_KEY``, and ``metadata_dict_to_node`` rebuilds the node on retrieval. An index written
before the node was stored gives bare ``TextNode`` objects (id, text, metadata).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from llama_index.core.schema import BaseNode, Document, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from .._records import NODE_KEY

logger = logging.getLogger(__name__)

_SCAN_BATCH = 1024
"""Records read at a time when looking for the nodes of a reference document."""


def node_record(node: BaseNode) -> dict[str, Any]:
    """What :data:`NODE_KEY` holds for ``node``: LlamaIndex's node JSON without the text and
    the metadata (both stored once, beside it), its type and its reference document id (its
    ``ref_doc_id``; a ``Document`` indexed whole is its own reference document)."""
    stored = node_to_metadata_dict(node, remove_text=True)
    content = json.loads(stored["_node_content"])
    content["metadata"] = {}  # kept at the top level of the record, where filters see it
    ref = node.ref_doc_id or (node.node_id if isinstance(node, Document) else None)
    return {
        "_node_content": json.dumps(content, ensure_ascii=False),
        "_node_type": stored["_node_type"],
        "ref_doc_id": ref,
    }


def indexed_metadata(node: BaseNode) -> dict[str, Any]:
    """The metadata a node is added with: its own, plus the rest of the node."""
    return {**node.metadata, NODE_KEY: node_record(node)}


def rebuild_node(doc_id: str, text: str, metadata: Mapping[str, Any]) -> BaseNode:
    """The node of a search hit: the stored node with its text and metadata, else (an index
    saved before nodes were stored, or a record that does not parse) a bare ``TextNode``."""
    meta = dict(metadata)
    stored = meta.pop(NODE_KEY, None)
    if isinstance(stored, Mapping) and isinstance(stored.get("_node_content"), str):
        try:
            node = metadata_dict_to_node(dict(stored), text=text)
        except ValueError as exc:  # pydantic's ValidationError and JSONDecodeError included
            logger.warning(
                "node %r: its stored node does not load (%s); returning a bare TextNode", doc_id, exc
            )
        else:
            node.metadata = meta
            return node
    return TextNode(id_=doc_id, text=text, metadata=meta)


def ref_doc_node_ids(index: Any, ref_doc_id: str) -> list[str]:
    """Ids of the stored nodes whose reference document is ``ref_doc_id`` (each node once,
    a node split into windows under its own id)."""
    from vllm_pool.retrievers.long_documents import PARENT_KEY

    ids = index.ids()
    found: dict[str, None] = {}
    for start in range(0, len(ids), _SCAN_BATCH):
        for record in index.get(ids[start : start + _SCAN_BATCH]):
            stored = record.metadata.get(NODE_KEY)
            if isinstance(stored, Mapping) and stored.get("ref_doc_id") == ref_doc_id:
                found[str(record.metadata.get(PARENT_KEY, record.id))] = None
    return list(found)
