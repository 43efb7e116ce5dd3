"""A light HTTP/1.1 load generator: keep-alive connections that POST JSON and read the answer.

When the load generator runs on the server's own cores (the serving benchmarks on a 2-core
machine), every millisecond of CPU it spends per request is taken from the server. A
general client (aiohttp, httpx) spends 0.7-1.2 ms per small request on building the request,
parsing headers into multi-dicts, and its connection pool; this one writes the request
bytes in one call and reads only what it must (the status line, ``Content-Length``, then
exactly that many bytes), as load tools such as ``wrk`` do, at about a fifth of the cost.

Each answer is checked: its status must be 2xx (else :class:`HTTPStatusError` with the
status and the start of the body) and its body complete. Responses must carry
``Content-Length`` (uvicorn sets it for every non-streaming response); a chunked answer
raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit


class HTTPStatusError(RuntimeError):
    """A non-2xx answer: ``status`` and the start of the ``body``."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send ``request``; return the status, the body and whether the server keeps the connection."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, keep = None, True
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                keep = value.strip().lower() != b"close"
            elif name == b"transfer-encoding":
                raise RuntimeError("the light client reads Content-Length bodies only, not chunked ones")
        body = await self.reader.readexactly(length) if length else b""
        return status, body, keep

    def close(self) -> None:
        self.writer.close()


class LightClient:
    """POST JSON to one server over at most ``connections`` keep-alive connections.

    Args:
        url: ``http://host:port`` of the server.
        connections: the most connections open at once (one per concurrent request).
    """

    def __init__(self, url: str, connections: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LightClient speaks plain http://host:port only, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._netloc = parts.netloc  # the Host header
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    def request_bytes(self, path: str, body: Any) -> bytes:
        """The whole request for POSTing ``body`` (JSON-encoded unless already bytes) to ``path``."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self._netloc}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        )
        return head.encode() + data

    async def post(self, path: str, body: Any) -> bytes:
        """POST ``body`` to ``path``; the response body of a 2xx answer (else HTTPStatusError)."""
        request = self.request_bytes(path, body)
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                status, data, keep = await conn.exchange(request)
            except BaseException:
                conn.close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                conn.close()
        if not 200 <= status < 300:
            raise HTTPStatusError(status, data)
        return data

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        return _Connection(reader, writer)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


@contextlib.asynccontextmanager
async def light_client(url: str, connections: int) -> AsyncIterator[LightClient]:
    """A :class:`LightClient` whose connections are closed on exit."""
    client = LightClient(url, connections)
    try:
        yield client
    finally:
        client.close()
