"""LlamaIndex ``MetadataFilters`` on the vllm-pool indexes select what LlamaIndex's own simple
vector store selects: each filter checked against ``build_metadata_filter_fn`` on the same
metadata (empty filter lists, missing keys and ``None`` included)."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn  # noqa: E402
from vllm_pool.integrations.llamaindex._filters import to_index_filter  # noqa: E402
from vllm_pool.retrievers.filters import compile_filter  # noqa: E402

METADATA = [
    {"module": "json", "year": 2021},
    {"module": "os", "year": 2024, "tag": None},
    {"module": "re"},
    {},
]
OPS = [FilterOperator.EQ, FilterOperator.NE, FilterOperator.GT, FilterOperator.IN, FilterOperator.NIN]


def _filters():
    for key, value in (("module", "json"), ("year", 2022), ("tag", None), ("missing", None)):
        for op in OPS:
            if op in (FilterOperator.IN, FilterOperator.NIN):  # lists of one type (None: not allowed)
                value_ = [value, 2024] if isinstance(value, int) else [v for v in (value, "os") if v]
            else:
                value_ = value
            if op == FilterOperator.GT and not isinstance(value_, int):
                continue
            yield MetadataFilters(filters=[MetadataFilter(key=key, value=value_, operator=op)])
    for condition in (FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT):
        yield MetadataFilters(filters=[], condition=condition)
        yield MetadataFilters(
            filters=[MetadataFilter(key="module", value="json"), MetadataFilter(key="year", value=2024)],
            condition=condition,
        )


@pytest.mark.parametrize("filters", list(_filters()), ids=repr)
def test_same_nodes_as_llamaindex(filters):
    want = build_metadata_filter_fn(lambda i: METADATA[int(i)], filters)
    ours = compile_filter(to_index_filter(filters))
    assert [ours(m) for m in METADATA] == [want(str(i)) for i in range(len(METADATA))]
