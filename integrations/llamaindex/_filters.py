"""LlamaIndex ``MetadataFilters`` translated to the retrievers' filter dicts.

The indexes take LangChain FAISS-style filter dicts (``vllm_pool.retrievers.filters``);
LlamaIndex users write ``MetadataFilters``. Each ``MetadataFilter`` becomes one field
condition and each ``MetadataFilters`` an ``$and`` / ``$or`` / ``$not`` group (``NOT``
meaning none of its filters holds, as in LlamaIndex's simple vector store). As there, an
empty ``MetadataFilters`` keeps every node, and a missing or ``None`` value matches only
``!=`` and ``nin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from vllm_pool.retrievers.filters import compile_filter

_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def to_index_filter(filters: Any) -> Any:
    """The index filter for ``filters``, checked.

    Args:
        filters: ``None``, LlamaIndex ``MetadataFilters`` (or one ``MetadataFilter``), a
            filter dict (``{"year": {"$gte": 2023}}``) or a callable on the metadata.

    Returns:
        ``None``, a filter dict or the callable.

    Raises:
        ValueError: an operator with no equivalent (``any``, ``all``, ``contains``,
            ``text_match``, ``is_empty``...), named in the message.
        TypeError: something that is not a filter.
    """
    if isinstance(filters, (MetadataFilters, MetadataFilter)):
        filters = _translate(filters)
    elif filters is not None and not isinstance(filters, Mapping) and not callable(filters):
        raise TypeError(
            "filters must be LlamaIndex MetadataFilters, a filter dict or a callable, "
            f"got {type(filters).__name__}"
        )
    compile_filter(filters)  # unknown operators raise now, not at the first query
    return filters


def _translate(node: MetadataFilters | MetadataFilter) -> dict[str, Any]:
    if isinstance(node, MetadataFilter):
        op = _OPERATORS.get(FilterOperator(node.operator))
        if op is None:
            supported = ", ".join(o.value for o in _OPERATORS)
            raise ValueError(
                f"MetadataFilter on {node.key!r}: operator {FilterOperator(node.operator).value!r} "
                f"is not supported by the vllm-pool indexes (supported: {supported})"
            )
        # as LlamaIndex: a missing or None value matches != and not in, and nothing else
        if op in ("$ne", "$nin"):
            return {"$or": [{node.key: {"$eq": None}}, {node.key: {op: node.value}}]}
        return {node.key: {"$ne": None, op: node.value}}
    if not node.filters:
        return {"$and": []}  # no filters: every node, whatever the condition (as LlamaIndex)
    parts = [_translate(f) for f in node.filters]
    condition = FilterCondition(node.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    return {"$not": {"$or": parts}}
