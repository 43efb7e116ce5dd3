"""Keeping a document's text beside its metadata inside a ``vllm_pool.retrievers`` index.

The indexes store string ids and JSON metadata; the adapters also need the text back. It
is stored in the metadata under :data:`TEXT_KEY`, so it is saved and loaded with the index
(atomically, without pickle) and a dict filter on the user's keys works unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

TEXT_KEY = "__vllm_pool_text__"
"""Metadata key holding the document text inside an index."""


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
    """Adapt a user's filter to packed metadata (a callable must not see the text key)."""
    if flt is None or isinstance(flt, Mapping):
        return flt
    if callable(flt):
        predicate: Callable[[dict[str, Any]], bool] = flt

        def wrapped(metadata: dict[str, Any]) -> bool:
            return bool(predicate(unpack(metadata)[1]))

        return wrapped
    raise TypeError(f"filter must be a dict of metadata values or a callable, got {type(flt).__name__}")
