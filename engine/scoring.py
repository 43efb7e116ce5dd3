"""`LLM.score` input shapes: 1:1, 1:N and N:N pairs (the server's ``/score`` and ``/rerank`` too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vllm_pool.engine.inputs import check_unicode

PAIR_SHAPE_ERROR = "Input lengths must be either 1:1, 1:N or N:N"

Decode = Callable[[list[int]], str]
"""The tokenizer's ``decode``: a ``{"prompt_token_ids": [...]}`` input is scored as its text."""


def _as_text(item: object, name: str, decode: Decode | None) -> str:
    """One input as text: a string, a ``{"prompt": ...}`` dict, or (with ``decode``) a
    ``{"prompt_token_ids": [...]}`` dict, as vLLM's ``LLM.score`` takes them. ``""`` is a
    text (a cross-encoder's pair keeps the special tokens, and ``embed("")`` is its
    special tokens, as in Sentence Transformers)."""
    if isinstance(item, dict):
        if "multi_modal_data" in item:
            raise ValueError(f"{name}: multi-modal prompts are not supported in scoring")
        if "prompt_token_ids" in item and decode is not None:
            ids = item["prompt_token_ids"]
            if not isinstance(ids, Sequence) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in ids
            ):
                raise TypeError(f"{name}['prompt_token_ids'] must be a list of integers")
            return decode(list(ids))
        if "prompt" not in item:
            raise TypeError(f"{name} is a dict without 'prompt' or 'prompt_token_ids'")
        item, name = item["prompt"], f"{name}['prompt']"
    if not isinstance(item, str):
        raise TypeError(f"{name} must be a string, got {type(item).__name__}")
    check_unicode(item, name)
    return item


def _as_list(data: object, name: str, decode: Decode | None) -> list[str]:
    if isinstance(data, (str, dict)):
        return [_as_text(data, name, decode)]
    if isinstance(data, Sequence) and not isinstance(data, (bytes, bytearray)):
        return [_as_text(item, f"{name}[{i}]", decode) for i, item in enumerate(data)]
    raise TypeError(f"{name} must be a string or a list of strings, got {type(data).__name__}")


def pair_up(
    data_1: object,
    data_2: object,
    names: tuple[str, str] = ("data_1", "data_2"),
    decode: Decode | None = None,
) -> tuple[list[str], list[str]]:
    """Expand 1:1, 1:N and N:N inputs into two equal-length lists of texts.

    ``names`` are the inputs' names in error messages (the server's ``text_1`` / ``text_2``);
    with ``decode``, token-id prompts are taken as their decoded text (vLLM's ``LLM.score``).

    >>> pair_up("q", ["a", "b"])
    (['q', 'q'], ['a', 'b'])
    """
    a, b = _as_list(data_1, names[0], decode), _as_list(data_2, names[1], decode)
    if len(a) > 1 and len(a) != len(b):
        raise ValueError(PAIR_SHAPE_ERROR)
    if not a:
        raise ValueError("At least one text element must be given")
    if not b:
        raise ValueError("At least one text_pair element must be given")
    return a * len(b) if len(a) == 1 else a, b
