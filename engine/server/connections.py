"""Connection handling that uvicorn's own options do not cover.

uvicorn (0.29 to 0.54 at least) has no timeout for a request's headers: a client that
connects and sends half a request line holds its connection forever; and when a client
half-closes its socket after sending a request (``shutdown(SHUT_WR)``), asyncio closes the
transport, so the answer is never written. :func:`guarded_h11_protocol` returns uvicorn's
h11 protocol with both fixed; :func:`uvicorn_options` gives the keyword arguments of
``uvicorn.run`` / ``uvicorn.Config`` for a :class:`~.app.ServerConfig`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
"""Largest request head (request line and headers) accepted; h11 answers 400 above."""


def guarded_h11_protocol(header_timeout: float) -> type:
    """uvicorn's ``H11Protocol`` with a header read timeout and answers to half-closed clients.

    Args:
        header_timeout: seconds a connection may take to deliver a complete request head
            (from connecting, or from the end of its previous response); it is closed after.

    Returns:
        A protocol class for ``uvicorn.Config(http=...)``.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        """H11Protocol that closes connections stuck before a complete request head and
        answers a request whose client half-closed the connection after sending it."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._client_eof = False
            self._head_timer: asyncio.TimerHandle | None = None
            super().connection_made(transport)
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
            super().data_received(data)
            if self._busy():
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
            if self._busy():
                self._client_eof = True
                return True  # keep the transport open for writing the answer
            return None  # nothing in progress: close as before

    return GuardedH11Protocol


def uvicorn_options(config: Any) -> dict[str, Any]:
    """``uvicorn.run`` keyword arguments enforcing the connection limits of ``config``.

    Args:
        config: a :class:`~.app.ServerConfig` (its ``header_timeout``).
    """
    return {
        "http": guarded_h11_protocol(config.header_timeout),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": 5,
    }
