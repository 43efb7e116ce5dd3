"""Server fixtures: in-process clients over ASGI, and a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from live_server import LiveServer

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


@pytest.fixture(scope="module")
def live_server(default_llm) -> Iterator[LiveServer]:
    """The default model served with an API key (``API_KEY``) on 127.0.0.1."""
    from vllm_pool.engine.server import ServerConfig, build_app

    config = ServerConfig(api_key=API_KEY, served_model_names=["minilm"])
    with LiveServer(build_app(default_llm, config), config, backlog=256) as server:
        server.api_key = API_KEY
        yield server
