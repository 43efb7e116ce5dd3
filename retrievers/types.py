"""Contracts shared by the retrievers: hits, records, filters and errors.

Read this file first: both indexes (:mod:`.dense`, :mod:`.multivector`) take string ids,
JSON-serializable ``dict`` metadata and an optional filter, and return :class:`Hit` lists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import filters

Metadata = dict[str, Any]
"""Per-document metadata: a JSON-serializable dict."""

Filter = Mapping[str, Any] | Callable[[Metadata], bool]
"""A metadata filter: a LangChain FAISS-style dict (``{"year": {"$gte": 2023}}``, see
:mod:`.filters`), or a predicate on the metadata."""


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
    """Tell whether ``metadata`` passes ``flt`` (``None`` passes everything; see :mod:`.filters`)."""
    return filters.matches(metadata, flt)


def check_filter(flt: object) -> None:
    """Raise ``TypeError`` / ``ValueError`` unless ``flt`` is a valid filter (see :mod:`.filters`)."""
    filters.compile_filter(flt)


def check_k(k: object, name: str = "k") -> int:
    """Return ``k`` as an int, raising ``TypeError`` / ``ValueError`` unless it is >= 1.

    Args:
        k: the value to check.
        name: the option named by the error (``"k"``, ``"candidates_per_token"``...).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return int(k)
