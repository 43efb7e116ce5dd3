"""`LLM.score` input shapes: 1:1, 1:N and N:N pairs (the server's ``/score`` and ``/rerank`` too)."""

from __future__ import annotations

from collections.abc import Sequence

from vllm_pool.engine.inputs import check_unicode

PAIR_SHAPE_ERROR = "Input lengths must be either 1:1, 1:N or N:N"


def _as_list(data: object, name: str) -> list[str]:
    if isinstance(data, str):
        if not data:
            raise ValueError(f"{name} is an empty string")
        check_unicode(data, name)
        return [data]
    if isinstance(data, Sequence) and not isinstance(data, (bytes, bytearray)):
        items = list(data)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(f"{name}[{i}] must be a string, got {type(item).__name__}")
            if not item:
                raise ValueError(f"{name}[{i}] is an empty string")
            check_unicode(item, f"{name}[{i}]")
        return items
    raise TypeError(f"{name} must be a string or a list of strings, got {type(data).__name__}")


def pair_up(
    data_1: object, data_2: object, names: tuple[str, str] = ("data_1", "data_2")
) -> tuple[list[str], list[str]]:
    """Expand 1:1, 1:N and N:N inputs into two equal-length lists.

    ``names`` are the inputs' names in error messages (the server's ``text_1`` / ``text_2``).

    >>> pair_up("q", ["a", "b"])
    (['q', 'q'], ['a', 'b'])
    """
    a, b = _as_list(data_1, names[0]), _as_list(data_2, names[1])
    if len(a) == 1 and len(b) >= 1:
        a = a * len(b)
    elif len(a) != len(b) or not a:
        raise ValueError(PAIR_SHAPE_ERROR)
    return a, b
