"""Metadata filters: LangChain FAISS-style operators compiled once into a predicate.

Every index (dense, multi-vector, PLAID, sharded) and every store / retriever built on them
takes the same ``filter``: ``None``, a callable on the metadata dict, or a dict written as
for LangChain's ``FAISS`` vector store (the semantics of its ``_create_filter_func``):

- ``{"field": value}``: equal (``metadata.get("field") == value``; a missing field is ``None``);
- ``{"field": [v1, v2]}``: the value is one of the list (``$in``);
- ``{"field": {"$op": value, ...}}``: every operator holds, with ``$eq``, ``$ne`` (also
  spelled ``$neq``, as LangChain does), ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``, ``$nin``;
- ``{"$and": [f1, f2]}``, ``{"$or": [f1, f2]}``, ``{"$not": f}``: nested filters;
- several keys in one dict must all hold.

Two deliberate differences from LangChain, both where LangChain fails or is surprising:
an ordering comparison between values that cannot be ordered (``None > 3``, ``"a" < 1``)
does not match instead of raising ``TypeError`` in the middle of a search; and a logical
key next to other keys (``{"$or": [...], "year": 2024}``) requires both instead of
silently ignoring the other keys. Unknown operators raise ``ValueError`` naming them, at
every nesting level.

Example:
    >>> keep = compile_filter({"year": {"$gte": 2023}, "topic": ["ml", "ir"]})
    >>> keep({"year": 2024, "topic": "ir"}), keep({"year": 2022, "topic": "ir"})
    (True, False)
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": operator.eq,
    "$ne": operator.ne,
    "$neq": operator.ne,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_MEMBERSHIP = {"$in": False, "$nin": True}  # operator -> negated
_LOGICAL = ("$and", "$or", "$not")
FIELD_OPERATORS = frozenset(_COMPARISONS) | frozenset(_MEMBERSHIP)
"""Operators allowed inside a field condition (``{"year": {"$gte": 2023}}``)."""
OPERATORS = FIELD_OPERATORS | frozenset(_LOGICAL)
"""Every operator a filter may use."""


def compile_filter(flt: object) -> Predicate | None:
    """Check a filter and turn it into a predicate on a metadata dict.

    Args:
        flt: ``None``, a callable taking the metadata dict, or a filter dict (module doc).

    Returns:
        ``None`` for no filter, else a function ``metadata -> bool``.

    Raises:
        TypeError: ``flt`` (or a nested part) has the wrong type, e.g. ``$or`` not a list.
        ValueError: an unknown operator; the message names it and where it is.
    """
    if flt is None:
        return None
    if isinstance(flt, Mapping):
        return _compile(flt, "filter")
    if callable(flt):
        predicate = flt
        return lambda metadata: bool(predicate(metadata))
    raise TypeError(f"filter must be a dict (LangChain FAISS-style) or a callable, got {type(flt).__name__}")


def _compile(flt: Mapping[str, Any], where: str) -> Predicate:
    parts: list[Predicate] = []
    for key, value in flt.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: keys must be strings, got {key!r}")
        if key.startswith("$"):
            parts.append(_logical(key, value, f"{where}[{key!r}]"))
        else:
            parts.append(_field(key, value, f"{where}[{key!r}]"))
    if len(parts) == 1:
        return parts[0]
    return lambda metadata: all(part(metadata) for part in parts)


def _logical(op: str, value: Any, where: str) -> Predicate:
    if op == "$not":
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: $not takes a filter dict, got {type(value).__name__}")
        inner = _compile(value, where)
        return lambda metadata: not inner(metadata)
    if op in ("$and", "$or"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, Mapping) for v in value):
            raise TypeError(f"{where}: {op} takes a list of filter dicts, got {value!r}")
        subs = [_compile(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if op == "$and":
            return lambda metadata: all(sub(metadata) for sub in subs)
        return lambda metadata: any(sub(metadata) for sub in subs)
    supported = ", ".join(sorted(OPERATORS))
    raise ValueError(f"{where}: unsupported filter operator {op!r} (supported: {supported})")


def _field(name: str, condition: Any, where: str) -> Predicate:
    if isinstance(condition, Mapping):
        checks = [_operator(op, value, f"{where}[{op!r}]") for op, value in condition.items()]
        return lambda metadata: all(check(metadata.get(name)) for check in checks)
    if isinstance(condition, list):
        return lambda metadata: metadata.get(name) in condition
    return lambda metadata: bool(metadata.get(name) == condition)


def _operator(op: object, value: Any, where: str) -> Callable[[Any], bool]:
    if op in _COMPARISONS:
        compare = _COMPARISONS[op]  # type: ignore[index]

        def check(found: Any) -> bool:
            try:
                return bool(compare(found, value))
            except TypeError:  # e.g. None > 3: the document does not match
                return False

        return check
    if op in _MEMBERSHIP:
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise TypeError(f"{where}: {op} takes a list of values, got {type(value).__name__}")
        negated = _MEMBERSHIP[op]  # type: ignore[index]
        values = list(value)
        return lambda found: (found in values) != negated
    raise ValueError(
        f"{where}: unsupported filter operator {op!r} (inside a field: {', '.join(sorted(FIELD_OPERATORS))})"
    )


def matches(metadata: dict[str, Any], flt: object) -> bool:
    """Tell whether ``metadata`` passes ``flt`` (compiles it each call; prefer :func:`compile_filter`)."""
    predicate = compile_filter(flt)
    return True if predicate is None else predicate(metadata)
