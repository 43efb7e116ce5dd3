"""One write per response: uvicorn's head and body writes joined (``CoalescedWrites``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
from vllm_pool.engine.server.connections import CoalescedWrites

sys.path.insert(0, str(Path(__file__).parents[1] / "helpers"))
from live_server import LiveServer  # noqa: E402


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name)


async def test_writes_of_one_step_leave_as_one_in_order():
    fake = FakeTransport()
    t = CoalescedWrites(fake, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.writelines([b"{", b"}"])
    assert fake.writes == [] and t.get_write_buffer_size() == 7 + 21
    await asyncio.sleep(0)
    assert fake.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    t.write(b"next")
    await asyncio.sleep(0)
    assert fake.writes[1:] == [b"next"]
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's


async def test_close_and_eof_flush_first_abort_drops():
    fake = FakeTransport()
    t = CoalescedWrites(fake, asyncio.get_running_loop())
    t.write(b"last answer")
    t.write_eof()
    assert fake.writes == [b"last answer"] and fake.eof
    t.write(b"bye")
    t.close()
    assert fake.writes[-1] == b"bye" and fake.closed
    await asyncio.sleep(0)  # the flush scheduled by the write finds nothing (no write after close)
    assert len(fake.writes) == 2

    fake = FakeTransport()
    t = CoalescedWrites(fake, asyncio.get_running_loop())
    t.write(b"never sent")
    t.abort()
    await asyncio.sleep(0)
    assert fake.writes == [] and fake.aborted


def test_each_response_is_one_write_over_loopback(monkeypatch):
    """Through uvicorn with the server's protocol: one transport write per response (uvicorn
    alone makes two: the head, then the body), and the responses are whole."""
    from fastapi import FastAPI

    writes: list[bytes] = []

    class Recording:
        def __init__(self, transport: Any) -> None:
            self.transport = transport

        def write(self, data: bytes) -> None:
            writes.append(bytes(data))
            self.transport.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.transport, name)

    real_init = CoalescedWrites.__init__
    monkeypatch.setattr(
        CoalescedWrites, "__init__", lambda self, t, loop: real_init(self, Recording(t), loop)
    )
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return {"echo": body}

    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        answers = [client.post("/echo", json={"i": i}) for i in range(3)]
    assert [a.json() for a in answers] == [{"echo": {"i": i}} for i in range(3)]
    assert len(writes) == 3
    for i, w in enumerate(writes):
        assert w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b'{"echo":{"i":%d}}' % i)
