"""Keeping a document's text beside its metadata inside a ``vllm_pool.retrievers`` index.

The indexes store string ids and JSON metadata; the adapters also need the text back. It
is stored in the metadata under :data:`TEXT_KEY`, so it is saved and loaded with the index
(atomically, without pickle) and a dict filter on the user's keys works unchanged.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vllm_pool.engine.inputs import check_unicode
from vllm_pool.retrievers import long_documents
from vllm_pool.retrievers.filters import compile_filter
from vllm_pool.retrievers.registry import check_json_value, check_unique

TEXT_KEY = "__vllm_pool_text__"
"""Metadata key holding the document text inside an index."""

NODE_KEY = "__vllm_pool_node__"
"""Metadata key holding the rest of a LlamaIndex node (relationships, excluded metadata keys,
templates) inside an index, so that the retriever gives back the node it was given."""


def check_id_list(ids: Any, what: str = "ids") -> None:
    """Refuse a single string where a list of ids is expected (``delete("12")`` would
    otherwise delete ``"1"`` and ``"2"``).

    Raises:
        TypeError: ``ids`` is a ``str`` or ``bytes``.
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be a list of ids, not a single string")


def pack(text: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Index metadata for a document: a copy of ``metadata`` plus the text.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: ``metadata`` already uses :data:`TEXT_KEY`.
    """
    if not isinstance(text, str):
        raise TypeError(f"document text must be a string, got {type(text).__name__}")
    meta = copy.deepcopy(dict(metadata or {}))
    if TEXT_KEY in meta:
        raise ValueError(f"metadata key {TEXT_KEY!r} is reserved")
    meta[TEXT_KEY] = text
    return meta


def unpack(metadata: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split index metadata back into ``(text, user metadata)``."""
    meta = dict(metadata)
    text = meta.pop(TEXT_KEY, "")
    return text, meta


def user_filter(flt: Any) -> Any:
    """Adapt a user's filter to packed metadata: a callable sees the user's metadata only
    (neither the text key, a stored node nor a long document's window keys).

    Raises:
        ValueError: an unknown operator in a filter dict (``vllm_pool.retrievers.filters``).
    """
    if flt is None or isinstance(flt, Mapping):
        compile_filter(flt)
        return flt
    if callable(flt):
        predicate: Callable[[dict[str, Any]], bool] = flt

        def wrapped(metadata: dict[str, Any]) -> bool:
            meta = long_documents.public(unpack(metadata)[1])
            meta.pop(NODE_KEY, None)
            return bool(predicate(meta))

        return wrapped
    raise TypeError(f"filter must be a dict (LangChain FAISS-style) or a callable, got {type(flt).__name__}")


def _valid_unicode(text: str, where: str) -> None:
    try:
        check_unicode(text, where)
    except ValueError as exc:
        raise ValueError(f"{exc} (nothing was added)") from None


def new_records(
    texts: Iterable[str],
    metadatas: Sequence[Mapping[str, Any] | None] | None,
    ids: Sequence[str | None] | None,
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Texts, ids and packed metadatas of documents about to be added.

    A missing id (or a missing list) gets a new UUID.

    Raises:
        TypeError: ``texts`` is a single string (it would be added letter by letter).
        ValueError: ``metadatas`` or ``ids`` do not have one entry per text, or an id is
            given twice.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    texts = list(texts)
    if metadatas is not None and len(metadatas) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(metadatas)} metadatas")
    if ids is not None and len(ids) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(ids)} ids")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__} (nothing was added)")
        _valid_unicode(text, f"texts[{i}]")  # saved as UTF-8 (add_embeddings embeds nothing first)
    new_ids = [i if i is not None else uuid.uuid4().hex for i in (ids or [None] * len(texts))]
    for j, doc_id in enumerate(new_ids):
        if isinstance(doc_id, str):
            _valid_unicode(doc_id, f"ids[{j}]")
    check_unique(new_ids)
    metas = [pack(t, m) for t, m in zip(texts, metadatas or [None] * len(texts), strict=True)]
    for i, meta in enumerate(metas):  # refused now, before any embedding, not at save time
        check_json_value({k: v for k, v in meta.items() if k != TEXT_KEY}, f"metadatas[{i}]")
    return texts, new_ids, metas
