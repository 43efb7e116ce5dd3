"""Metadata filters against LangChain FAISS's own filter function, on every index type."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex, ShardedIndex
from vllm_pool.retrievers.filters import compile_filter

with warnings.catch_warnings():  # langchain-community announces its sunset on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.vectorstores import FAISS

METADATAS = [
    {"year": 2021 + i % 5, "topic": ["ml", "ir", "db", "os"][i % 4], "draft": i % 3 == 0, "score": i / 10}
    | ({"tag": "x"} if i % 7 == 0 else {})
    for i in range(40)
]

# Filters where LangChain's function and ours must agree exactly (LangChain spells "not
# equal" as $neq; we accept it, and $ne).
AGREEING = [
    {"year": 2023},
    {"year": {"$eq": 2023}},
    {"year": {"$neq": 2023}},
    {"year": {"$gt": 2023}},
    {"year": {"$gte": 2023}},
    {"year": {"$lt": 2023}},
    {"year": {"$lte": 2023}},
    {"year": {"$gte": 2022, "$lt": 2025}},
    {"topic": ["ml", "db"]},
    {"topic": ["ml", "db", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]},  # LangChain's set path
    {"topic": {"$in": ["ml", "ir"]}},
    {"topic": {"$nin": ["ml", "ir"]}},
    {"tag": {"$nin": ["x"]}},  # a missing field is None, not in the list
    {"tag": None},  # a missing field equals None
    {"tag": {"$neq": "x"}},
    {"topic": "ml", "draft": True},
    {"$and": [{"year": {"$gte": 2022}}, {"topic": {"$in": ["ml", "os"]}}]},
    {"$or": [{"year": 2021}, {"topic": "db"}]},
    {"$or": []},
    {"$and": []},
    {"$not": {"topic": "ml"}},
    {"$not": {"$or": [{"year": 2021}, {"draft": True}]}},
    {"$and": [{"$or": [{"year": 2021}, {"year": 2025}]}, {"$not": {"score": {"$lt": 1.0}}}]},
    {"score": {"$gt": 0.5, "$lte": 2.5}},
    {"draft": {"$eq": False}},
]


def langchain_keep(flt):
    return FAISS._create_filter_func(flt)


@pytest.mark.parametrize("flt", AGREEING, ids=[str(f) for f in AGREEING])
def test_same_documents_as_langchain_faiss(flt):
    ours, theirs = compile_filter(flt), langchain_keep(flt)
    expected = [i for i, m in enumerate(METADATAS) if theirs(m)]
    assert [i for i, m in enumerate(METADATAS) if ours(m)] == expected
    assert 0 < len(expected) < len(METADATAS) or flt in ({"$or": []}, {"$and": []})


def test_ne_alias_callables_and_differences_from_langchain():
    ne = compile_filter({"year": {"$ne": 2023}})
    assert [m for m in METADATAS if ne(m)] == [m for m in METADATAS if m["year"] != 2023]
    assert compile_filter(lambda m: m["year"] == 2021)({"year": 2021})
    # an ordering on a missing field or another type: LangChain raises mid-search, we do not match
    with pytest.raises(TypeError):
        langchain_keep({"tag": {"$gt": "a"}})(METADATAS[1])
    assert not compile_filter({"tag": {"$gt": "a"}})(METADATAS[1])
    assert not compile_filter({"year": {"$lt": "2023"}})(METADATAS[1])
    # a logical key beside a field: both hold (LangChain silently drops the field)
    both = compile_filter({"$or": [{"year": 2021}, {"year": 2022}], "topic": "ml"})
    assert [m for m in METADATAS if both(m)] == [
        m for m in METADATAS if m["year"] in (2021, 2022) and m["topic"] == "ml"
    ]


@pytest.mark.parametrize(
    ("flt", "error", "names"),
    [
        ({"$nor": [{"a": 1}]}, ValueError, "$nor"),
        ({"year": {"$regex": "2.*"}}, ValueError, "$regex"),
        ({"$and": [{"$xor": []}]}, ValueError, "$xor"),  # nested: LangChain would treat it as a field
        ({"year": {"$and": [{"a": 1}]}}, ValueError, "$and"),
        ({"$or": {"a": 1}}, TypeError, "$or"),
        ({"$not": [{"a": 1}]}, TypeError, "$not"),
        ({"topic": {"$in": "ml"}}, TypeError, "$in"),
        ("year", TypeError, "str"),
    ],
)
def test_bad_filters_raise_naming_the_problem(flt, error, names):
    with pytest.raises(error, match=names.replace("$", r"\$")):
        compile_filter(flt)


def _dense(metas):
    rng = np.random.default_rng(0)
    return DenseIndex.from_vectors(rng.standard_normal((len(metas), 8)), metadatas=metas)


def _multi(metas, index_type="flat"):
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((6, 8)).astype(np.float32) for _ in metas]
    return MultiVectorIndex.from_vectors(docs, metadatas=metas, index_type=index_type)


def _sharded(metas):
    rng = np.random.default_rng(0)
    half = len(metas) // 2
    shards = [
        DenseIndex.from_vectors(rng.standard_normal((len(part), 8)), [str(i) for i in ids], part)
        for part, ids in ((metas[:half], range(half)), (metas[half:], range(half, len(metas))))
    ]
    return ShardedIndex(shards)


@pytest.mark.parametrize("build", ["dense", "dense-faiss", "multi", "multi-hnsw", "plaid", "sharded"])
def test_every_index_type_returns_exactly_the_matching_documents(build):
    metas = METADATAS * 4  # 160 documents
    index = {
        "dense": lambda: _dense(metas),
        "dense-faiss": lambda: _dense(metas),
        "multi": lambda: _multi(metas),
        "multi-hnsw": lambda: _multi(metas, "hnsw"),
        "plaid": lambda: _multi(metas, "plaid"),
        "sharded": lambda: _sharded(metas),
    }[build]()
    if build in ("dense-faiss", "multi-hnsw", "plaid"):  # filtered search through the ANN path
        index.config["exact_filter_limit"] = 0
    rng = np.random.default_rng(1)
    query = rng.standard_normal((4, 8)).astype(np.float32)
    for flt in AGREEING[::3] + [{"$not": {"topic": "ml"}}]:
        keep = langchain_keep(flt)
        expected = {str(i) for i, m in enumerate(metas) if keep(m)}
        hits = index.search(query, k=len(metas), filter=flt)[0]
        assert {h.id for h in hits} == expected, flt
    with pytest.raises(ValueError, match=r"\$nor"):
        index.search(query, k=3, filter={"$nor": []})
