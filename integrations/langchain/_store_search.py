"""How ``VllmPoolVectorStore`` ranks a query vector: the index's candidates, their Sentence
Transformers scores, and LangChain FAISS's ``score_threshold``."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._similarity import scores

EXACT_DISTANCE_LIMIT = 10_000
"""Documents up to which euclidean / manhattan stores score every document (about 0.2 s)."""


def ranked_hits(index: Any, name: str, embedding: Any, k: int, flt: Any) -> list[tuple[Any, float]]:
    """The ``k`` best ``(hit, score)`` pairs of a non-empty index for a query vector, best first.

    Cosine and dot: the index's exact inner products. Euclidean and manhattan (scores are
    negated distances): every document up to :data:`EXACT_DISTANCE_LIMIT`, else the best
    ``max(4 * k, k + 16)`` inner-product candidates, each scored exactly. The hits and their
    vectors are one snapshot of the index, taken under its lock.
    """
    query = np.asarray(embedding, dtype=np.float32)
    fetch, total = k, len(index)
    if name not in ("cosine", "dot"):  # every document up to a limit, else candidates
        fetch = total if total <= EXACT_DISTANCE_LIMIT else max(4 * k, k + 16)
    # one snapshot: a delete or overwrite by another thread between the search and the lookup
    # of the hits' vectors would drop a hit or pair its text with another vector's score; the
    # index's lock is re-entrant and its methods stay on this thread
    with index._lock:
        hits = index.search(query, k=fetch, filter=flt)[0]
        exact = name not in ("cosine", "dot") and hits
        records = {r.id: r.vectors for r in index.get([hit.id for hit in hits])} if exact else {}
    found = [float(hit.score) for hit in hits]
    if exact:  # exact ST scores of the candidates
        found = [float(x) for x in scores(name, query, [records[hit.id] for hit in hits])]
    return sorted(zip(hits, found), key=lambda pair: -pair[1])[:k]


def check_threshold(score_threshold: Any) -> float | None:
    """``score_threshold`` as a float (``None``: no threshold).

    Raises:
        TypeError: a value that is not a real number.
    """
    if score_threshold is None:
        return None
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, numbers.Real):
        raise TypeError(f"score_threshold must be a number, got {type(score_threshold).__name__}")
    return float(score_threshold)


def above_threshold(
    ranked: list[tuple[Any, float]], score_threshold: float | None
) -> list[tuple[Any, float]]:
    """The pairs whose score is at least ``score_threshold``, as LangChain's FAISS keeps them
    for its similarity strategies (``MAX_INNER_PRODUCT``: ``score >= score_threshold`` on the
    score it returns). The store's scores are all higher-is-better (distances are negated), so
    the comparison is ``>=`` for every similarity function."""
    if score_threshold is None:
        return ranked
    return [(hit, score) for hit, score in ranked if score >= score_threshold]
