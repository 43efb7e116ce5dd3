"""Connection handling that uvicorn's own options do not cover.

uvicorn (0.29 to 0.54 at least) has no timeout for a request's headers: a client that
connects and sends half a request line holds its connection forever; and neither parser caps
a request head that comes complete in one read. :func:`guarded_protocol` returns uvicorn's
HTTP/1.1 protocol with both fixed: its ``httptools`` one where that parser is installed (the
server extra has it: a quarter less of the server's CPU per short request than the pure
Python ``h11``, which is the fallback). Its transport is wrapped in :class:`CoalescedWrites`: uvicorn writes a
response's head and its body with two ``send`` calls, two system calls and two TCP segments
per response, and on a few CPU cores those writes were about a quarter of the event loop's
time under load. :func:`uvicorn_options` gives the keyword arguments of ``uvicorn.run`` /
``uvicorn.Config`` for a :class:`~.app.ServerConfig`. uvicorn runs its event loop on
``uvloop`` where that is installed (the server extra has it outside Windows).

An end of file from the client while its request runs is a disconnect, as in uvicorn and
vLLM: a client that timed out and closed its socket looks the same as one that only
half-closed it (``shutdown(SHUT_WR)``) after sending its request, and its queued inputs are
dropped (``vllm_pool_dropped_inputs_total``). With ``answer_half_closed``
(``--answer-half-closed``) the connection stays open for writing instead and the answer is
sent; a client that closed its socket is then seen as gone only once the answer is written,
so its inputs still run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
"""Largest request head (request line and headers) accepted; the server answers 400 above."""


def base_protocol() -> type:
    """uvicorn's ``HttpToolsProtocol`` where ``httptools`` is installed, else ``H11Protocol``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


class CoalescedWrites:
    """An asyncio transport whose writes within one step of the event loop go out as one.

    The first write of a step is held and a flush is scheduled (``call_soon``); the writes
    that follow in the same step join it, so a response's head and body (written back to
    back by uvicorn) leave in one system call and one TCP segment. ``close`` and
    ``write_eof`` flush first; ``abort`` drops what is held, as it drops the transport's
    own buffer. Everything else is the wrapped transport's.

    Args:
        transport: the connection's transport.
        loop: the event loop running it.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write what is held now (a no-op when nothing is, or the transport is closing)."""
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held or ())

    # the transport's own methods that run per request, without __getattr__'s detour
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_protocol(
    header_timeout: float, base: type | None = None, answer_half_closed: bool = False
) -> type:
    """uvicorn's HTTP/1.1 protocol with a header read timeout and a cap on the request head.

    Args:
        header_timeout: seconds a connection may take to deliver a complete request head
            (from connecting, or from the end of its previous response); it is closed after.
        base: the uvicorn protocol class to extend (default: :func:`base_protocol`).
        answer_half_closed: a client's end of file while its request runs keeps the
            connection open for the answer (closed once it is written) instead of being a
            disconnect (see the module's docs).

    Returns:
        A protocol class for ``uvicorn.Config(http=...)``.
    """
    base = base or base_protocol()

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        """Closes connections stuck before a complete request head, answers 400 to a head
        over :data:`MAX_HEADER_BYTES`, writes each response in one piece
        (:class:`CoalescedWrites`) and, with ``answer_half_closed``, answers a request whose
        client half-closed the connection after sending it."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._client_eof = False
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0  # of the request head being received
            super().connection_made(CoalescedWrites(transport, self.loop))
            self._arm_head_timer()

        # -- header timeout --------------------------------------------------------------
        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self._busy() and not self.transport.is_closing():
                logger.info("Closing a connection that sent no complete request within %g s", header_timeout)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if not self._busy():  # bytes of a request head (up to its blank line)
                end = data.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else end + 4
                if self._head_bytes > MAX_HEADER_BYTES:
                    self._cancel_head_timer()
                    self.send_400_response(f"Request head over {MAX_HEADER_BYTES} bytes.")
                    return
            super().data_received(data)
            if self._busy():
                self._head_bytes = 0
                self._cancel_head_timer()  # the head is complete: the app has the request

        def on_response_complete(self) -> None:
            if self._client_eof:  # nothing more can come: close once the answer is out
                self.server_state.total_requests += 1
                self.transport.close()
                return
            super().on_response_complete()
            if not self.transport.is_closing():
                if self._busy():
                    self._cancel_head_timer()  # a pipelined request started at once
                else:
                    self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        # -- half-closed clients ---------------------------------------------------------
        def eof_received(self) -> bool | None:
            if answer_half_closed and self._busy():
                self._client_eof = True
                return True  # keep the transport open for writing the answer
            # uvicorn's behaviour: the transport closes, connection_lost tells the app the
            # client is gone (http.disconnect) and its queued inputs are dropped
            return super().eof_received()

    return GuardedProtocol


def uvicorn_options(config: Any) -> dict[str, Any]:
    """``uvicorn.run`` keyword arguments enforcing the connection limits of ``config``.

    Args:
        config: a :class:`~.app.ServerConfig` (its ``header_timeout`` and ``answer_half_closed``).
    """
    return {
        "http": guarded_protocol(config.header_timeout, answer_half_closed=config.answer_half_closed),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": 5,
    }
