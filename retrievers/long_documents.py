"""Long documents in a :class:`~.multivector.MultiVectorIndex`: overlapping windows indexed
under their parent's id, hits merged per parent.

A document longer than the encoder's ``doc_maxlen`` becomes windows of ``doc_maxlen``
tokens whose text parts overlap by ``overlap`` tokens (see
:meth:`~.colbert.ColBERTEncoder.encode_document_windows`). Window ``j`` of document ``d`` is
stored as ``"d#w{j}"`` with its parent id and window count in its metadata; the user's
metadata is on every window (filters work unchanged), the ``first_window_only`` keys (e.g.
a stored text) only on the first. A document that fits is stored under its own id.

:func:`search` fetches window hits, keeps each parent's best window (MaxSim of the best
passage: the score of the document is the score of its best window) and returns the
parent ids with the first window's metadata.

>>> window_id("doc-1", 2)
'doc-1#w2'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vllm_pool.engine.model_thread import with_the_model

from .registry import check_unique
from .types import Filter, Hit, check_k

logger = logging.getLogger(__name__)

PARENT_KEY = "__vllm_pool_parent__"
"""Metadata key of a window: the id of the document it comes from."""
WINDOWS_KEY = "__vllm_pool_windows__"
"""Metadata key of a window: how many windows its document has."""
_INTERNAL = (PARENT_KEY, WINDOWS_KEY)


def window_id(parent: str, j: int) -> str:
    """The id of window ``j`` of document ``parent``."""
    return f"{parent}#w{j}"


def _windows_of(index: Any, parent: str) -> list[str]:
    first = index.get([window_id(parent, 0)])
    if not first or first[0].metadata.get(PARENT_KEY) != parent:
        return []
    return [window_id(parent, j) for j in range(int(first[0].metadata[WINDOWS_KEY]))]


def _stored_ids(index: Any, ids: Iterable[str]) -> list[str]:
    """The ids present in ``index`` of documents ``ids``: each one itself and its windows."""
    return [i for doc_id in dict.fromkeys(ids) for i in (doc_id, *_windows_of(index, doc_id)) if i in index]


@with_the_model  # where the index's methods run: its lock is taken there, not held across a hop
def remove(index: Any, ids: Iterable[str]) -> int:
    """Remove documents by id, all their windows included; return how many documents went.

    The windows are looked up and removed under the index's lock: a re-add of the same
    document in another thread comes wholly before or after (never orphan windows).
    """
    targets, removed = [], 0
    with index._lock:
        for doc_id in dict.fromkeys(ids):
            found = _stored_ids(index, [doc_id])
            targets += found
            removed += bool(found)
        if targets:
            index.remove(targets)
    return removed


def windows(
    encoder: Any,
    texts: Sequence[str],
    ids: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]],
    overlap: int = 32,
    first_window_only: Sequence[str] = (),
) -> tuple[list[Any], list[str], list[dict[str, Any]]]:
    """Encode ``texts`` in windows: ``(vectors, window ids, window metadatas)`` to add.

    Args:
        encoder: a :class:`~.colbert.ColBERTEncoder`.
        texts: the documents.
        ids: one id per text.
        metadatas: one dict per text (copied onto every window).
        overlap: tokens shared by consecutive windows.
        first_window_only: metadata keys kept on the first window only.
    """
    parents, vectors = encoder.encode_document_windows(list(texts), overlap)
    counts = [0] * len(texts)
    for p in parents:
        counts[p] += 1
    win_ids, win_metas, seen = [], [], [0] * len(texts)
    for p in parents:
        j, seen[p] = seen[p], seen[p] + 1
        meta = dict(metadatas[p])
        if counts[p] == 1:
            win_ids.append(ids[p])
        else:
            win_ids.append(window_id(ids[p], j))
            meta.update({PARENT_KEY: ids[p], WINDOWS_KEY: counts[p]})
            if j:
                for key in first_window_only:
                    meta.pop(key, None)
        win_metas.append(meta)
    if sum(c > 1 for c in counts):
        logger.info("split %d long documents into %d windows", sum(c > 1 for c in counts), len(parents))
    return vectors, win_ids, win_metas


def add_documents(
    index: Any,
    encoder: Any,
    texts: Sequence[str],
    ids: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]],
    overlap: int = 32,
    first_window_only: Sequence[str] = (),
) -> list[str]:
    """Encode ``texts`` in windows (see :func:`windows`) and add them; an id already present
    is replaced whole. Everything is encoded before the index changes, so a bad text leaves
    the index as it was.

    Returns:
        ``ids``.
    """
    vectors, win_ids, win_metas = windows(encoder, texts, ids, metadatas, overlap, first_window_only)
    replace(index, ids, vectors, win_ids, win_metas)
    return list(ids)


@with_the_model  # as remove
def replace(
    index: Any, ids: Sequence[str], vectors: list[Any], win_ids: list[str], win_metas: list[dict[str, Any]]
) -> None:
    """Replace documents ``ids`` (every window) by the given windows.

    The windows are added first (``index.add`` overwrites the ids already present, and a
    refused call changes nothing), then the old entries that are no longer needed are removed
    (windows beyond the new count, a split document's windows when it now fits, or the
    unsplit document when it is now split), so a failed call loses nothing. Ids given twice
    (a window's id among them) are refused before anything changes. The old windows are read
    and replaced under the index's lock (see :func:`remove`).
    """
    check_unique(ids)
    check_unique(win_ids, "ids (of documents and of long documents' windows)")
    new = set(win_ids)
    with index._lock:
        stale = [i for i in _stored_ids(index, ids) if i not in new]  # read before the add rewrites them
        index.add(vectors, win_ids, win_metas)
        if stale:
            index.remove(stale)


def get(index: Any, ids: Sequence[str]) -> list[Any]:
    """Stored documents by id (a split document: its first window's record, under its own id)."""
    out = []
    for doc_id in ids:
        found = index.get([doc_id]) or index.get([window_id(doc_id, 0)])
        if found and found[0].metadata.get(PARENT_KEY, doc_id) == doc_id:
            rec = found[0]
            out.append(type(rec)(doc_id, public(rec.metadata), rec.vectors))
    return out


def public(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` without the window keys (what the user stored)."""
    return {k: v for k, v in metadata.items() if k not in _INTERNAL}


def search(index: Any, queries: Sequence[Any], k: int, filter: Filter | None = None) -> list[list[Hit]]:
    """MaxSim search with windows merged: ``k`` distinct documents per query, best first.

    Args:
        index: a ``MultiVectorIndex`` (with or without split documents).
        queries: query token matrices, as for ``MultiVectorIndex.search``.
        k: documents per query.
        filter: metadata filter (on the user's metadata, present on every window).
    """
    k = check_k(k)
    total = len(index)
    out = []
    for q in queries:
        fetch = min(k, total) if total else k
        while True:
            hits = index.search([q], k=max(fetch, 1), filter=filter)[0]
            merged = _merge(hits)
            if len(merged) >= k or len(hits) < fetch or fetch >= total:
                break
            fetch = min(total, fetch * 4)
        out.append(_with_parent_metadata(index, merged[:k]))
    return out


def _merge(hits: list[Hit]) -> list[Hit]:
    best: dict[str, Hit] = {}
    for hit in hits:  # best first: the first window seen of a parent is its best
        parent = hit.metadata.get(PARENT_KEY, hit.id)
        if parent not in best:
            best[parent] = Hit(parent, hit.score, hit.metadata)
    return list(best.values())


def _with_parent_metadata(index: Any, hits: list[Hit]) -> list[Hit]:
    out = []
    for hit in hits:
        meta = hit.metadata
        if PARENT_KEY in meta:  # a window: the document's metadata is on its first window
            first = index.get([window_id(hit.id, 0)])
            meta = first[0].metadata if first else meta
        out.append(Hit(hit.id, hit.score, public(meta)))
    return out
