"""Server fixtures: in-process clients over ASGI, and a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

API_KEY = "test-key-123"


def make_client(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers, timeout=60)


@pytest.fixture()
def client_for():
    """``client_for(app, headers=None)``: an in-process client of ``app``."""
    return make_client


@pytest.fixture()
def app(default_llm):
    from vllm_pool.engine.server import build_app

    return build_app(default_llm)


@pytest.fixture()
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


class LiveServer:
    """uvicorn serving ``app`` in a daemon thread on a free loopback port."""

    api_key: str | None = None

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", backlog=256)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture(scope="module")
def live_server(default_llm) -> Iterator[LiveServer]:
    """The default model served with an API key (``API_KEY``) on 127.0.0.1."""
    from vllm_pool.engine.server import ServerConfig, build_app

    app = build_app(default_llm, ServerConfig(api_key=API_KEY, served_model_names=["minilm"]))
    with LiveServer(app) as server:
        server.api_key = API_KEY
        yield server
