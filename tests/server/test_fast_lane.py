"""The fast lane: well-formed JSON requests to the pooling endpoints skip FastAPI's stack and
get the same answers as through it; everything else still reaches FastAPI."""

from __future__ import annotations

import json

import pytest

FAST_BODIES = {
    "/v1/embeddings": {"input": ["a short text", "another one"]},
    "/pooling": {"input": "a short text", "task": "embed"},
    "/score": {"text_1": "a query", "text_2": ["a text", "another text"]},
    "/v1/score": {"text_1": "a query", "text_2": "a text"},
    "/rerank": {"query": "a query", "documents": ["a text", "another text"]},
    "/v1/rerank": {"query": "a query", "documents": ["a text"], "top_n": 1},
}


@pytest.fixture()
def fastapi_calls(app):
    """Paths that reached FastAPI's own middleware stack (behind the fast lane)."""
    calls: list[str] = []
    inner = app.build_middleware_stack()

    async def recording(scope, receive, send):
        calls.append(scope["path"])
        await inner(scope, receive, send)

    app.middleware_stack = recording
    return calls


def _same_answer(a: dict, b: dict) -> None:
    """Equal bodies but for the random response ids and the creation times."""
    drop = {"id", "created"}
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


@pytest.mark.parametrize("path", sorted(FAST_BODIES))
async def test_valid_requests_skip_fastapi_with_the_same_answer(path, client, fastapi_calls):
    body = FAST_BODIES[path]
    fast = await client.post(path, json=body)
    assert fast.status_code == 200, fast.text
    assert fastapi_calls == []
    # A JSON media type the fast lane leaves to FastAPI (which parses any +json type).
    slow = await client.post(path, content=json.dumps(body), headers={"content-type": "application/x+json"})
    assert fastapi_calls == [path]
    assert slow.status_code == 200, slow.text
    _same_answer(fast.json(), slow.json())


@pytest.mark.parametrize(
    "content, headers",
    [
        (b'{"input": 3}', {"content-type": "application/json"}),  # a bad field
        (b'{"input": "a",', {"content-type": "application/json"}),  # not JSON
        (b'[{"input": "a"}]', {"content-type": "application/json"}),  # not an object
        (b'{"input": "a"}', {"content-type": "text/plain"}),  # not JSON's media type
        (b'{"input": "a"}', {}),  # no media type
    ],
)
async def test_other_bodies_get_fastapis_answer(content, headers, client, fastapi_calls):
    r = await client.post("/v1/embeddings", content=content, headers=headers)
    assert fastapi_calls == ["/v1/embeddings"]
    assert r.status_code == 400, r.text
    assert r.json()["object"] == "error" and r.json()["type"] == "BadRequestError"


async def test_other_routes_and_methods_reach_fastapi(client, fastapi_calls):
    assert (await client.post("/tokenize", json={"prompt": "a b"})).status_code == 200
    assert (await client.get("/v1/models")).status_code == 200
    r = await client.get("/v1/embeddings")
    assert r.status_code == 405 and r.json()["type"] == "MethodNotAllowedError"
    assert fastapi_calls == ["/tokenize", "/v1/models", "/v1/embeddings"]


async def test_an_endpoints_error_in_the_fast_lane_is_answered_as_through_fastapi(client, fastapi_calls):
    body = {"input": "a", "model": "no-such-model"}
    fast = await client.post("/v1/embeddings", json=body)
    slow = await client.post(
        "/v1/embeddings", content=json.dumps(body), headers={"content-type": "application/x+json"}
    )
    assert fastapi_calls == ["/v1/embeddings"]
    assert fast.status_code == slow.status_code == 404
    assert fast.json() == slow.json()
    assert "does not exist" in fast.json()["message"]
