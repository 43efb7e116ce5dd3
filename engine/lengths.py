"""Prompt length limits: vLLM's errors for over-long prompts and too large truncation sizes.

vLLM never cuts a prompt silently: a prompt longer than ``max_model_len`` is an error unless
the request sets ``truncate_prompt_tokens`` (``-1``: the model's limit). The offline API
raises a ``ValueError``; the server answers 400 with a different text that names the token
count, the limit and the operation. Both texts are vLLM's, followed by the position of the
input (our rule: an error names the input), so vLLM's regexes still match.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

EMBEDDING = "embedding generation"
"""What the server's over-length message says an input was for, but on ``/score`` ("score")
and ``/classify`` ("classification"): vLLM names it by endpoint."""


class PromptTooLongError(ValueError):
    """A prompt over the model's limit without ``truncate_prompt_tokens``.

    ``str(error)`` is vLLM's offline message; :meth:`online_message` the server's.

    Args:
        where: the input, e.g. ``"prompts[3]"`` or ``"pair 2"``.
        num_tokens: the prompt's token count (special tokens included).
        limit: the limit it is over.
        task: the pooling task.
        kind: ``"context"`` (``max_model_len``) or ``"embed"`` (``pooler_config.max_embed_len``).

    ``PromptTooLongError(message)`` alone is the same error with a finished message (how
    :func:`renamed_prompts` renumbers positions when it appends a suffix).
    """

    def __init__(
        self,
        where: str,
        num_tokens: int | None = None,
        limit: int = 0,
        task: str = "embed",
        kind: str = "context",
    ) -> None:
        self.where = where
        self.num_tokens = num_tokens
        self.limit = limit
        self.task = task
        self.kind = kind
        super().__init__(where if num_tokens is None else self._offline())

    def _offline(self) -> str:
        if self.kind == "embed":
            return self.online_message()
        return (
            f"The decoder prompt (length {self.num_tokens}) is longer than the maximum model length "
            f"of {self.limit}. Make sure that `max_model_len` is no smaller than the number of text "
            f"tokens. ({self.where}; set truncate_prompt_tokens to cut it)"
        )

    def online_message(self, operation: str = EMBEDDING) -> str:
        """vLLM's server text (HTTP 400), with the input's position; ``operation``: what the
        input was for (see :data:`EMBEDDING`)."""
        if self.num_tokens is None:
            return str(self)
        if self.kind == "embed":
            return (
                f"This model's maximum embedding input length is {self.limit} tokens. However, you "
                f"requested {self.num_tokens} tokens in the input for embedding generation. Please "
                f"reduce the length of the input. ({self.where})"
            )
        return (
            f"This model's maximum context length is {self.limit} tokens. However, you requested "
            f"{self.num_tokens} tokens in the input for {operation}. Please reduce the length of the "
            f"input. ({self.where})"
        )


class TruncationTooLargeError(ValueError):
    """``truncate_prompt_tokens`` over ``max_model_len`` (vLLM's offline and server texts)."""

    def __init__(self, truncate_prompt_tokens: int | str, max_model_len: int | None = None) -> None:
        self.truncate_prompt_tokens = truncate_prompt_tokens
        self.max_model_len = max_model_len
        if max_model_len is None:  # a finished message (see PromptTooLongError)
            super().__init__(truncate_prompt_tokens)
            return
        super().__init__(
            f"truncate_prompt_tokens value ({truncate_prompt_tokens}) is greater than max_model_len "
            f"({max_model_len}). Please, select a smaller truncation size."
        )

    def online_message(self) -> str:
        """vLLM's server text (HTTP 400)."""
        if self.max_model_len is None:
            return str(self)
        return (
            "truncate_prompt_tokens value is greater than max_model_len. "
            "Please, select a smaller truncation size."
        )


def num_special_tokens(tokenizer: Any, pair: bool) -> int:
    """The special tokens ``tokenizer`` adds to a text (``pair``: a text pair); 0 if unknown."""
    try:
        return int(tokenizer.num_special_tokens_to_add(pair=pair))
    except Exception:  # a tokenizer without the method
        return 0


def check_cut(limit: int, minimum: int, where: str, pair: bool = False, n: int | None = None) -> None:
    """Raise ``ValueError`` when a text (``pair``: a text pair) cannot be cut to ``limit`` tokens.

    A limit below ``minimum`` (the special tokens the tokenizer adds) leaves a text uncut, so
    it is refused before tokenizing; given the token count ``n`` after cutting, a result still
    over the limit is refused too (the engine never runs a prompt longer than it was cut to).
    """
    what = "a text pair" if pair else "a text"
    if limit < minimum:
        raise ValueError(
            f"truncate_prompt_tokens={limit} ({where}) is smaller than the {minimum} special tokens "
            f"the tokenizer adds to {what}: the minimum is {minimum}"
        )
    if n is not None and n > limit:
        raise ValueError(
            f"truncate_prompt_tokens={limit} ({where}): the tokenizer could not cut {what} of {n} "
            f"tokens to {limit}"
        )


def online_message(exc: Exception, operation: str = EMBEDDING) -> str:
    """The server's text for an engine input error (``operation``: see
    :meth:`PromptTooLongError.online_message`)."""
    if isinstance(exc, PromptTooLongError):
        return exc.online_message(operation)
    if isinstance(exc, TruncationTooLargeError):
        return exc.online_message()
    return str(exc)


_PROMPT = re.compile(r"\bprompts\[(\d+)\]")


def renamed_prompts(
    exc: Exception, name_of: Callable[[int], str | None], suffix: str | None = None
) -> Exception | None:
    """``exc`` with each ``prompts[i]`` in it read as ``name_of(i)`` (kept where that is
    ``None``), and ``suffix`` appended in parentheses; ``None`` when nothing changes or the
    exception class cannot be made from a message. A :class:`PromptTooLongError` keeps its
    fields (the server's text) when no suffix is added.

    Callers that cut or de-duplicate the user's list before the engine sees it name the
    user's inputs with it (``texts[280]``, ``query``), not the engine's ``prompts[24]``.
    """

    def rename(text: str) -> str:
        return _PROMPT.sub(lambda m: name_of(int(m.group(1))) or m[0], text)

    if suffix is None and isinstance(exc, PromptTooLongError) and exc.num_tokens is not None:
        return PromptTooLongError(rename(exc.where), exc.num_tokens, exc.limit, exc.task, exc.kind)
    message = rename(str(exc)) + (f" ({suffix})" if suffix else "")
    if message == str(exc):
        return None
    try:
        return type(exc)(message)
    except Exception:  # an exception class with another constructor
        return None
