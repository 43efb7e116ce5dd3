"""Errors from a batch, renumbered to the caller's positions.

Indexes and integrations cut a caller's list into batches before calling an embedder; the
engine's errors name the position inside the batch (``prompts[24]``). :func:`caller_positions`
rewrites them to the caller's (``texts[280]``) and can add that nothing was changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from vllm_pool.engine.lengths import renamed_prompts

UNCHANGED = "nothing was added: the index is unchanged"
"""Appended to the error of an add that failed before changing anything."""


def label(name: str, position: int | str) -> str:
    """``name[position]``, or ``position`` itself when it is a name (a string)."""
    return position if isinstance(position, str) else f"{name}[{position}]"


@contextmanager
def caller_positions(
    start: int,
    name: str = "texts",
    unchanged: str | None = None,
    positions: Sequence[int | str] | None = None,
) -> Iterator[None]:
    """Re-raise ``ValueError`` / ``TypeError`` with ``prompts[i]`` read as ``name[start + i]``.

    Args:
        start: position of the batch's first item in the caller's list.
        name: the caller's name for the list.
        unchanged: a sentence appended to the message (e.g. :data:`UNCHANGED`).
        positions: where the items of that list sit in the caller's own caller's list, when
            it is a part of it (``name[positions[start + i]]``; a string is the item's whole
            name, e.g. ``"query"`` before the documents).

    Example:
        >>> with caller_positions(256, "texts"):  # doctest: +IGNORE_EXCEPTION_DETAIL
        ...     raise ValueError("prompts[24] is empty: it has no tokens")
        Traceback (most recent call last):
        ValueError: texts[280] is empty: it has no tokens
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        where = (lambda i: start + i) if positions is None else (lambda i: positions[start + i])
        renamed = renamed_prompts(exc, lambda i: label(name, where(i)), unchanged)
        if renamed is None:  # nothing to rename, or a class with another constructor: as it is
            raise
        raise renamed from exc
