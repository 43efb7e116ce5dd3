"""Limits that keep one client from stalling or exhausting the server.

* :class:`GuardMiddleware` (ASGI, outside the app): the API key is checked from the headers
  before any body is read (every path but ``/health``, the docs pages included); a body over
  ``max_body_bytes`` (by ``Content-Length`` or while it streams) is a 413 and a body that does
  not arrive within ``body_timeout`` seconds is a 408, both answered without waiting for the
  rest and with the connection closed.
* :func:`check_texts`: before tokenization, each text must be a string of valid Unicode (no
  lone surrogates) of at most ``max_input_chars`` characters (``""`` is a text: its special
  tokens, as offline and in vLLM); the error names the field and the caller's index.
* :func:`slices`: a large request is tokenized and queued in slices, so the small requests
  that arrive meanwhile wait for one slice, not for the whole request.

Errors use the documented shape of :mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from vllm_pool.engine.server.errors import APIError, error_response

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
"""Paths served without the API key."""
UNAUTHORIZED = "Unauthorized: send the API key as 'Authorization: Bearer <key>'"

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_INPUT_CHARS = 100_000
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_HEADER_TIMEOUT = 10.0
SLICE_CHARS = 65_536
"""Characters tokenized in one go by a large request (about 60 ms on one core)."""
SLICE_INPUTS = 256
"""Inputs tokenized in one go by a large request."""
INLINE_CHARS = 4_096
"""A request of at most this many characters is tokenized on the event loop, where a Rust
tokenizer takes well under a millisecond for it: it never waits behind a large request on
the tokenizer thread, and skips the hand-off to that thread and back."""


# ---------------------------------------------------------------------- ASGI middleware
class GuardMiddleware:
    """Authenticate, then read the body under a size cap and a deadline, then call the app.

    Args:
        app: the wrapped ASGI app.
        api_key: the key clients send as ``Authorization: Bearer <key>``; ``None``: no key.
        max_body_bytes: request bodies above this many bytes are answered with 413.
        body_timeout: seconds the whole body may take to arrive (408 after that).
    """

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if not self._authorized(scope, headers):
            close = _has_body(headers)  # its body is not kept: the connection is not reused
            length = headers.get("content-length", "")
            if close and length.isdigit() and int(length) <= self.max_body_bytes:
                await self._discard_rest(receive)  # read and dropped, so the client sees the 401
            await _answer(scope, receive, send, UNAUTHORIZED, 401, close)
            return
        if not _has_body(headers):
            await self.app(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                text = f"Invalid Content-Length header {length[:40]!r}"
                await _answer(scope, receive, send, text, 400, True)
                return
            if int(length) > self.max_body_bytes:
                # Read what a client that sends first and reads after will send, unless it is huge.
                drain = int(length) <= 4 * self.max_body_bytes
                await self._too_large(scope, receive, send, f"{int(length)} bytes", drain)
                return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return  # answered (413 / 408) or the client went away
        whole = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay(whole, receive), send)

    def _authorized(self, scope: dict[str, Any], headers: dict[str, str]) -> bool:
        if self.api_key is None or scope.get("path") in OPEN_PATHS:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = self.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key)

    async def _too_large(
        self, scope: dict[str, Any], receive: Any, send: Any, size: str, drain: bool = True
    ) -> None:
        message = f"Request body too large: {size}, the limit is {self.max_body_bytes} bytes"
        message += " (--max-body-bytes)"
        if drain:
            await self._discard_rest(receive)
        await _answer(scope, receive, send, message, 413, True)

    async def _discard_rest(self, receive: Any) -> None:
        """Read and drop the rest of the body (at most 4x the limit, for at most 10 s), so that
        a client which sends its whole body before reading the answer gets the 413 rather
        than a reset connection; nothing is kept."""
        budget = 4 * self.max_body_bytes
        try:
            async with deadline(min(self.body_timeout, 10.0)):
                while budget > 0:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return
                    budget -= len(message.get("body", b""))
        except TimeoutError:
            return

    async def _read_body(self, scope: dict[str, Any], receive: Any, send: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        try:
            async with deadline(self.body_timeout):  # one timer for the whole body
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    more = message.get("more_body", False)
                    if size > self.max_body_bytes:
                        break
                    chunks.append(chunk)
                    if not more:
                        return b"".join(chunks)
        except TimeoutError:
            logger.info("%s: request body not received within %g s", scope.get("path"), self.body_timeout)
            text = f"Request body not received within {self.body_timeout:g} s (--body-timeout)"
            await _answer(scope, receive, send, text, 408, True)
            return None
        # the chunk over the limit may be the last: then nothing is left to drain (waiting for
        # more would stall the answer until the drain's deadline)
        await self._too_large(scope, receive, send, f"more than {self.max_body_bytes} bytes", more)
        return None


class deadline:  # noqa: N801 - used as a function, like asyncio.timeout
    """``async with deadline(seconds):`` raises ``TimeoutError`` when the block runs longer
    than ``seconds``: one timer that cancels the task (``asyncio.timeout`` of Python 3.11,
    also on 3.10), instead of a ``wait_for`` and its task around every ``await``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False

    async def __aenter__(self) -> None:
        self.task = asyncio.current_task()
        self.timer = asyncio.get_running_loop().call_later(self.seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> bool:
        self.timer.cancel()
        if exc_type is asyncio.CancelledError and self.expired:
            if hasattr(self.task, "uncancel"):  # Python 3.11+: this cancellation is handled here
                self.task.uncancel()
            raise TimeoutError from None
        return False


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def replay(message: dict[str, Any], receive: Any) -> Any:
    """A ``receive`` that returns ``message`` (already read) once, then waits on the client."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return message
        return await receive()

    return replayed


async def _answer(
    scope: dict[str, Any], receive: Any, send: Any, message: str, code: int, close: bool
) -> None:
    response = error_response(message, code)
    if close:
        response.headers["connection"] = "close"
    await response(scope, receive, send)


# ---------------------------------------------------------------------- input checks
def check_texts(texts: str | Sequence[Any], param: str, max_chars: int) -> None:
    """Check the strings of one request field before they are tokenized.

    Args:
        texts: the field's value: one string or a list (token-id lists are skipped).
        param: the field's name, for the message and the error's ``param``.
        max_chars: the longest string allowed.

    Raises:
        APIError: 400 for invalid Unicode, 413 for a string that is
            too long.
    """
    items = [texts] if isinstance(texts, str) else texts
    for i, text in enumerate(items):
        if not isinstance(text, str):
            continue  # token ids: checked by the engine against the vocabulary
        where = param if isinstance(texts, str) else f"{param}[{i}]"
        if len(text) > max_chars:
            raise APIError(
                f"{where} has {len(text)} characters, the limit is {max_chars} (--max-input-chars)",
                413,
                param,
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise APIError(
                f"{where} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character "
                f"{exc.start} (send UTF-8 text, or escape pairs such as \\ud83d\\ude00 together)",
                400,
                param,
            ) from None


def is_small(prompts: Sequence[Any], max_chars: int = INLINE_CHARS) -> bool:
    """Whether ``prompts`` hold at most ``max_chars`` characters (token ids count one each):
    such a request is tokenized on the event loop itself (:data:`INLINE_CHARS`)."""
    total = 0
    for prompt in prompts:
        total += _size(prompt)
        if total > max_chars:
            return False
    return True


def slices(
    prompts: Sequence[Any], max_chars: int = SLICE_CHARS, max_inputs: int = SLICE_INPUTS
) -> Iterator[range]:
    """Consecutive index ranges of ``prompts`` holding at most ``max_chars`` characters (token
    ids count one each) and ``max_inputs`` prompts; an input larger than that is a slice alone.

    >>> [list(r) for r in slices(["aaaa", "bb", "cc", "d"], max_chars=4)]
    [[0], [1, 2], [3]]
    """
    start, chars = 0, 0
    for i, prompt in enumerate(prompts):
        size = _size(prompt)
        if i > start and (chars + size > max_chars or i - start >= max_inputs):
            yield range(start, i)
            start, chars = i, 0
        chars += size
    if start < len(prompts):
        yield range(start, len(prompts))


def _size(prompt: Any) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, dict):
        ids = prompt.get("prompt_token_ids")
        return len(ids) if isinstance(ids, list) else len(str(prompt.get("prompt", "")))
    return 1


def token_slices(requests: Sequence[Any], max_tokens: int) -> Iterator[range]:
    """Consecutive ranges of ``requests`` of at most ``max_tokens`` prompt tokens (at least one)."""
    start, tokens = 0, 0
    for i, request in enumerate(requests):
        if i > start and tokens + request.num_tokens > max_tokens:
            yield range(start, i)
            start, tokens = i, 0
        tokens += request.num_tokens
    if start < len(requests):
        yield range(start, len(requests))


async def submit_in_slices(
    submit: Callable[[list[Any]], Awaitable[list[Any]]], requests: list[Any], max_tokens: int, ahead: int = 2
) -> list[Any]:
    """Queue ``requests`` through ``submit`` in slices of at most ``max_tokens`` tokens, with at
    most ``ahead`` slices queued at a time; the outputs of all slices, in order.

    A request that arrives meanwhile joins the queue behind at most ``ahead`` slices instead
    of behind the whole large request. A failure cancels the slices still queued.
    """
    parts = list(token_slices(requests, max_tokens))
    if len(parts) <= 1:
        return await submit(requests)

    def start(part: range) -> asyncio.Future[list[Any]]:
        return asyncio.ensure_future(submit(requests[part.start : part.stop]))

    pending = [start(p) for p in parts[:ahead]]
    outputs: list[Any] = []
    try:
        for i in range(len(parts)):
            outputs += await pending[i]
            if i + ahead < len(parts):
                pending.append(start(parts[i + ahead]))
    finally:
        for future in pending:
            if not future.cancel() and not future.cancelled():
                future.exception()  # retrieved: a slice that failed too is not logged as unseen
    return outputs
