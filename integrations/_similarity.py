"""Sentence Transformers' similarity functions, for the integrations' own scores.

A Sentence Transformers model names its similarity in ``config_sentence_transformers.json``
(``similarity_fn_name``: ``cosine`` (the default), ``dot``, ``euclidean`` or ``manhattan``;
the distances are negated so that higher is better). The bi-encoder reranking scores and the
vector store's scores use it, as ``SentenceTransformer.similarity`` would; ``LLM.score``
keeps vLLM's cosine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


def similarity_fn_name(llm: Any) -> str:
    """The model's similarity function name (``"cosine"`` when its folder names none).

    Raises:
        ValueError: the folder names a function Sentence Transformers does not have.
    """
    st = getattr(getattr(llm, "model_config", None), "st", None)
    name = getattr(st, "similarity_fn_name", None) or "cosine"
    if name not in SIMILARITY_FUNCTIONS:
        raise ValueError(
            f"{getattr(llm, 'model_name', 'the model')}: similarity_fn_name {name!r} is not one of "
            f"{list(SIMILARITY_FUNCTIONS)}"
        )
    return name


def scores(name: str, query: Any, vectors: Any) -> np.ndarray:
    """Similarity of one ``query`` vector ``[dim]`` to each row of ``vectors`` ``[n, dim]``.

    Computed in float32 as Sentence Transformers does. Returns ``[n]``.
    """
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    m = np.asarray(vectors, dtype=np.float32).reshape(-1, q.shape[0])
    if name == "cosine":
        qn = q / max(float(np.linalg.norm(q)), 1e-12)
        mn = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
        return mn @ qn
    if name == "dot":
        return m @ q
    if name == "euclidean":
        return -np.sqrt(((m - q) ** 2).sum(axis=1))
    if name == "manhattan":
        return -np.abs(m - q).sum(axis=1)
    raise ValueError(f"similarity function {name!r} is not one of {list(SIMILARITY_FUNCTIONS)}")


def relevance_fn(name: str) -> Callable[[float], float]:
    """A monotone map of the scores of ``name`` to a relevance in [0, 1] (LangChain's
    ``similarity_search_with_relevance_scores``).

    cosine: ``(1 + s) / 2``; dot: the logistic ``1 / (1 + exp(-s))``; euclidean and
    manhattan (``s = -distance``): ``1 / (1 + distance)``.
    """
    if name == "cosine":
        return lambda s: min(1.0, max(0.0, (1.0 + s) / 2.0))
    if name == "dot":
        return lambda s: 1.0 / (1.0 + math.exp(-s)) if s >= 0 else math.exp(s) / (1.0 + math.exp(s))
    if name in ("euclidean", "manhattan"):
        return lambda s: 1.0 / (1.0 + max(0.0, -s))
    raise ValueError(f"similarity function {name!r} is not one of {list(SIMILARITY_FUNCTIONS)}")
