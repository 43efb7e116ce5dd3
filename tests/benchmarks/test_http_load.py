"""`benchmarks/http_load.py`, the serving benchmark's light load generator, against a live
server on 127.0.0.1: the bodies it reads are the server's answers, byte for byte as httpx
reads them; a non-2xx answer raises with its status; a closed connection is replaced; many
concurrent requests share its keep-alive connections. No timing asserted."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from live_server import LiveServer

from benchmarks.http_load import HTTPStatusError, LightClient, light_client

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def server(default_llm):
    from vllm_pool.engine.server import ServerConfig, build_app

    config = ServerConfig(max_body_bytes=100_000)
    with LiveServer(build_app(default_llm, config), config) as live:
        yield live


def test_bodies_are_the_servers_answers(server):
    body = {"input": ["a light client", "reads the same bytes"]}
    expected = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60).json()

    async def go() -> bytes:
        async with light_client(server.url, 1) as client:
            return await client.post("/v1/embeddings", body)

    got = json.loads(asyncio.run(go()))
    assert [d["embedding"] for d in got["data"]] == [d["embedding"] for d in expected["data"]]
    assert got["usage"] == expected["usage"]


def test_errors_raise_and_connections_recover(server):
    async def go() -> None:
        async with light_client(server.url, 1) as client:
            with pytest.raises(HTTPStatusError) as info:
                await client.post("/v1/embeddings", {"input": ["x"], "model": "no-such-model"})
            assert info.value.status == 404 and b"no-such-model" in info.value.body
            # a 413 closes the connection (the server does not read the rest): the next
            # request goes over a new one
            with pytest.raises(HTTPStatusError) as info:
                await client.post("/v1/embeddings", b'{"input": "' + b"x" * 200_000 + b'"}')
            assert info.value.status == 413
            ok = json.loads(await client.post("/v1/embeddings", {"input": "after the errors"}))
            assert len(ok["data"]) == 1

    asyncio.run(go())


def test_concurrent_requests_share_the_connections(server, default_llm):
    texts = [f"request number {i}" for i in range(24)]

    async def go() -> list[bytes]:
        async with light_client(server.url, 4) as client:
            answers = await asyncio.gather(*(client.post("/v1/embeddings", {"input": t}) for t in texts))
            assert len(client._idle) <= 4  # never more connections than allowed
            return answers

    answers = asyncio.run(go())
    expected = default_llm.embed(texts, use_tqdm=False)
    for answer, out in zip(answers, expected):
        got = json.loads(answer)["data"][0]["embedding"]
        assert got == pytest.approx(out.outputs.embedding, abs=1e-5)


def test_rejects_urls_it_cannot_speak():
    with pytest.raises(ValueError, match="plain http"):
        LightClient("https://example.com", 1)
