"""ColBERT reranking of given texts: MaxSim of a query against each text, best first.

The RAGatouille / PyLate ``rank.rerank`` use case: a first-stage retriever (dense, BM25)
returns candidates, and a late-interaction model orders them. Nothing is indexed.

>>> from vllm_pool.retrievers import rerank  # doctest: +SKIP
>>> rerank("kitten", ["Python is a language.", "Kittens are young cats."], k=1, encoder=enc)  # doctest: +SKIP
[(1, 9.87)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from vllm_pool.engine import model_thread
from vllm_pool.engine.inputs import check_unicode

from .colbert import check_texts
from .maxsim import maxsim, pad_token_vectors
from .types import check_k


def rerank(
    query: str,
    documents: Sequence[str],
    k: int | None = None,
    *,
    encoder: Any,
    split_long_documents: bool = False,
    window_overlap: int = 32,
    batch_size: int = 64,
) -> list[tuple[int, float]]:
    """Order ``documents`` by their ColBERT MaxSim score against ``query``.

    Args:
        query: the query.
        documents: the candidate texts.
        k: how many to return (``None``: all, reordered).
        encoder: a :class:`~.colbert.ColBERTEncoder` (e.g. ``ColBERTEncoder.from_llm(llm)``).
        split_long_documents: score texts longer than ``doc_maxlen`` by their best window
            instead of cutting them.
        window_overlap: tokens shared by consecutive windows.
        batch_size: texts per encoder call.

    Returns:
        ``(index in documents, score)`` pairs, best first (ties keep the input order).

    Raises:
        TypeError: ``query`` is not a string, or ``documents`` is a single string.
        ValueError: ``k <= 0``, or an empty query or document (naming it).
    """
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    check_unicode(query, "query")
    if isinstance(documents, str):
        raise TypeError("documents must be a list of strings, not a single string")
    if k is not None:
        k = check_k(k)
    documents = list(documents)
    if not documents:
        return []
    check_texts(documents)  # named by their position in ``documents``, not in a batch
    q = encoder.encode_queries([query])[0]  # [Lq, D]
    scores = np.empty(len(documents), dtype=np.float32)
    for start in range(0, len(documents), batch_size):
        batch = documents[start : start + batch_size]
        if split_long_documents:
            parents, vectors = encoder.encode_document_windows(batch, window_overlap)
        else:
            parents, vectors = list(range(len(batch))), encoder.encode_documents(batch)
        tokens, mask = pad_token_vectors(vectors)
        window_scores = model_thread.shared().run(maxsim, q[None], tokens.numpy(), None, mask.numpy())[0]
        best = np.full(len(batch), -np.inf, dtype=np.float32)
        np.maximum.at(best, np.asarray(parents), window_scores)
        scores[start : start + len(batch)] = best
    order = np.argsort(-scores, kind="stable")
    if k is not None:
        order = order[:k]
    return [(int(i), float(scores[i])) for i in order]
