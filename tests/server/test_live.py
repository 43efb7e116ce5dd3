"""Over loopback (uvicorn on 127.0.0.1): auth, the official `openai` client, a bounded load test."""

from __future__ import annotations

import asyncio
import base64
import re

import httpx
import numpy as np
import torch


def _auth(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


async def test_loopback_auth_and_health(live_server):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
        assert (await c.get("/health")).status_code == 200
        r = await c.post("/v1/embeddings", json={"input": "hi"})
        assert r.status_code == 401 and r.json()["type"] == "AuthenticationError"
        r = await c.post(
            "/v1/embeddings", json={"input": "hi", "model": "minilm"}, headers=_auth(live_server)
        )
        assert r.status_code == 200 and r.json()["model"] == "minilm"
        r = await c.get("/v1/models", headers=_auth(live_server))
        assert [m["id"] for m in r.json()["data"]] == ["minilm", "sentence-transformers/all-MiniLM-L6-v2"]
        # a response names the model the request named (vLLM), the first served name when unset
        for sent, named in [
            ("sentence-transformers/all-MiniLM-L6-v2",) * 2,
            ("", "minilm"),
            (None, "minilm"),
        ]:
            for path, body in [
                ("/v1/embeddings", {"input": "hi"}),
                ("/v1/score", {"text_1": "a", "text_2": "b"}),
                ("/pooling", {"input": "hi"}),
            ]:
                body = {**body, **({} if sent is None else {"model": sent})}
                r = await c.post(path, json=body, headers=_auth(live_server))
                assert r.status_code == 200 and r.json()["model"] == named, (path, sent, r.text)


def test_openai_client(live_server, default_llm):
    import openai

    texts = ["Follow the white rabbit.", "hello world"]
    ref = default_llm.embed(texts, use_tqdm=False)
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=live_server.api_key, max_retries=0)
    for fmt in ("float", "base64", None):
        kwargs = {"encoding_format": fmt} if fmt else {}
        resp = client.embeddings.create(model="minilm", input=texts, **kwargs)
        assert resp.model == "minilm" and resp.usage.prompt_tokens == sum(
            len(o.prompt_token_ids) for o in ref
        )
        for d, o in zip(resp.data, ref):
            vec = d.embedding  # an explicit base64 request gets the string back, undecoded
            if isinstance(vec, str):
                vec = np.frombuffer(base64.b64decode(vec), dtype="<f4").tolist()
            torch.testing.assert_close(
                torch.tensor(vec, dtype=torch.float32),
                torch.tensor(o.outputs.embedding),
                atol=1e-5,
                rtol=1e-4,
            )
    bad = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="wrong", max_retries=0)
    try:
        bad.embeddings.create(model="minilm", input="x")
    except openai.AuthenticationError:
        pass
    else:
        raise AssertionError("a wrong key was accepted")
    try:
        client.embeddings.create(model="minilm", input="x", dimensions=32)
    except openai.BadRequestError as exc:
        assert "does not support matryoshka representation" in str(exc)
    else:
        raise AssertionError("dimensions were accepted")


async def test_bounded_load_64_clients(live_server, default_llm):
    """64 concurrent clients x 4 requests: every answer is right and the server stays up."""
    texts = [
        f"request {i}: the quick brown fox jumps over the lazy dog {'again ' * (i % 7)}" for i in range(32)
    ]
    ref = {
        t: torch.tensor(o.outputs.embedding) for t, o in zip(texts, default_llm.embed(texts, use_tqdm=False))
    }
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=live_server.url, headers=_auth(live_server), timeout=60, limits=limits
    ) as c:

        async def one_client(k: int) -> int:
            ok = 0
            for j in range(4):
                batch = [texts[(k + j) % 32], texts[(3 * k + j) % 32]][: 1 + (k + j) % 2]
                r = await c.post("/v1/embeddings", json={"input": batch})
                assert r.status_code == 200, r.text
                for d, t in zip(r.json()["data"], batch):
                    torch.testing.assert_close(torch.tensor(d["embedding"]), ref[t], atol=1e-5, rtol=1e-4)
                    ok += 1
            return ok

        done = await asyncio.wait_for(asyncio.gather(*(one_client(k) for k in range(64))), timeout=90)
        assert sum(done) == sum(1 + (k + j) % 2 for k in range(64) for j in range(4))
        assert (await c.get("/health")).status_code == 200
        metrics = (await c.get("/metrics")).text
    # requests from different clients were batched together
    total = float(re.search(r'vllm_pool_batch_requests_sum\{task="embed"\} (\S+)', metrics).group(1))
    count = float(re.search(r'vllm_pool_batch_requests_count\{task="embed"\} (\S+)', metrics).group(1))
    assert total / count > 1.5, (total, count)
