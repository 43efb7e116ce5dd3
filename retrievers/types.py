"""Contracts shared by the retrievers: hits, records, filters and errors.

Read this file first: both indexes (:mod:`.dense`, :mod:`.multivector`) take string ids,
JSON-serializable ``dict`` metadata and an optional filter, and return :class:`Hit` lists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Metadata = dict[str, Any]
"""Per-document metadata: a JSON-serializable dict."""

Filter = Mapping[str, Any] | Callable[[Metadata], bool]
"""A metadata filter: a dict of required equal values, or a predicate on the metadata."""


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: the document id given to ``add``.
        score: inner product (dense) or MaxSim score (multi-vector); higher is better.
        metadata: the document's metadata (a copy).
    """

    id: str
    score: float
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """A stored document, as returned by ``get``.

    Attributes:
        id: the document id.
        metadata: the document's metadata (a copy).
        vectors: ``[D]`` for a dense index, ``[L, D]`` (decoded) for a multi-vector index.
    """

    id: str
    metadata: Metadata
    vectors: np.ndarray


class IndexFormatError(ValueError):
    """A saved index cannot be loaded: wrong format version, missing or corrupt file, or a
    dimension other than the one expected. The message names the offending file."""


def matches(metadata: Metadata, flt: Filter | None) -> bool:
    """Tell whether ``metadata`` passes ``flt``.

    Args:
        metadata: a document's metadata.
        flt: ``None`` (everything passes), a dict of ``key: value`` pairs that must all be
            equal (a missing key fails), or a callable returning a bool.

    Returns:
        ``True`` when the document passes the filter.
    """
    if flt is None:
        return True
    if callable(flt):
        return bool(flt(metadata))
    return all(key in metadata and metadata[key] == value for key, value in flt.items())


def check_filter(flt: object) -> None:
    """Raise ``TypeError`` unless ``flt`` is ``None``, a mapping or a callable."""
    if flt is not None and not isinstance(flt, Mapping) and not callable(flt):
        raise TypeError(f"filter must be a dict of metadata values or a callable, got {type(flt).__name__}")


def check_k(k: object) -> int:
    """Return ``k`` as an int, raising ``TypeError`` / ``ValueError`` unless it is >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)
