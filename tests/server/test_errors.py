"""Bad requests get JSON errors in the spec's shape (never a traceback); auth."""

from __future__ import annotations

import pytest

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
KEYS = {"object", "message", "type", "param", "code"}


def _error(r, code: int, err_type: str) -> str:
    assert r.status_code == code, r.text
    body = r.json()
    assert set(body) == KEYS and body["object"] == "error"
    assert body["code"] == code and body["type"] == err_type
    assert "Traceback" not in r.text
    return body["message"]


async def test_dimensions_spec_message(client):
    r = await client.post(
        "/v1/embeddings", json={"input": "Follow the white rabbit.", "model": MODEL, "dimensions": 32}
    )
    assert r.json() == {
        "object": "error",
        "message": f'Model "{MODEL}" does not support matryoshka representation, changing output '
        "dimensions will lead to poor results.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


async def test_bad_json(client):
    r = await client.post(
        "/v1/embeddings", content=b'{"input": ', headers={"content-type": "application/json"}
    )
    assert "Invalid JSON" in _error(r, 400, "BadRequestError")


@pytest.mark.parametrize(
    ("path", "payload", "needle"),
    [
        ("/v1/embeddings", {}, "input: Field required"),
        ("/v1/embeddings", {"input": 3}, "input: Input should be"),
        ("/v1/embeddings", {"input": ["a", 1]}, "input: Input should be"),
        ("/v1/embeddings", {"input": "a", "dimensions": "32"}, "dimensions"),
        ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ("/v1/embeddings", {"input": []}, "input must not be empty"),
        ("/v1/embeddings", {"input": "a", "dimensions": 0}, "does not support matryoshka representation"),
        ("/v1/embeddings", {"input": "a", "truncate_prompt_tokens": 10_000}, "max_model_len"),
        ("/v1/embeddings", {"input": [[1, 2, 10**9]]}, "outside the vocabulary"),
        ("/rerank", {"query": "q"}, "documents: Field required"),
        ("/rerank", {"query": "q", "documents": ["a", 2]}, "documents.1"),
        ("/rerank", {"query": "q", "documents": ["a"], "top_n": 1.5}, "top_n"),
        ("/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "1:1, 1:N or N:N"),
        ("/score", {"text_1": "a"}, "text_2"),
        ("/tokenize", {"prompt": 5}, "prompt"),
        ("/detokenize", {"tokens": [-1]}, "outside the vocabulary"),
        ("/pooling", {"input": "a", "task": "nope"}, "Task nope is not supported, it must be one of"),
        ("/pooling", {"input": "a", "task": "embed", "use_activation": True}, "does not support"),
    ],
)
async def test_bad_requests(client, path, payload, needle):
    assert needle in _error(await client.post(path, json=payload), 400, "BadRequestError")


@pytest.mark.parametrize(
    ("path", "payload"),
    [("/classify", {"input": "a"}), ("/pooling", {"input": "a", "task": "classify"})],
)
async def test_unsupported_task(client, path, payload):
    message = _error(await client.post(path, json=payload), 400, "BadRequestError")
    if path == "/pooling":  # vLLM's /pooling message
        assert message == "Task classify is not supported, it must be one of ('embed', 'token_embed')."
    else:
        assert "Classification API is not supported by this model." in message
        assert "does not support the 'classify' task" in message


async def test_unknown_model(client):
    r = await client.post("/v1/embeddings", json={"input": "a", "model": "gpt-4"})
    assert _error(r, 404, "NotFoundError") == "The model `gpt-4` does not exist."


async def test_unknown_route_and_method(client):
    _error(await client.post("/v2/nothing", json={}), 404, "NotFoundError")
    _error(await client.get("/v1/embeddings"), 405, "MethodNotAllowedError")


async def test_too_many_inputs_and_tokens(default_llm, client_for):
    from vllm_pool.engine.server import ServerConfig, build_app

    app = build_app(default_llm, ServerConfig(max_inputs=4, max_request_tokens=20))
    async with client_for(app) as c:
        r = await c.post("/v1/embeddings", json={"input": ["a"] * 5})
        assert "limit is 4 (--max-inputs)" in _error(r, 413, "RequestTooLargeError")
        r = await c.post("/rerank", json={"query": "q", "documents": ["a"] * 5})
        assert "limit is 4" in _error(r, 413, "RequestTooLargeError")
        for side in ("text_1", "text_2"):  # the field over the limit is named
            other = "text_2" if side == "text_1" else "text_1"
            r = await c.post("/score", json={side: ["a"] * 5, other: "b"})
            _error(r, 413, "RequestTooLargeError")
            assert r.json()["param"] == side
        r = await c.post("/v1/embeddings", json={"input": ["one two three four five six seven eight"] * 3})
        assert "limit is 20 (--max-request-tokens)" in _error(r, 413, "RequestTooLargeError")
        assert (await c.post("/v1/embeddings", json={"input": ["a"] * 4})).status_code == 200


async def test_engine_failure_is_500_json_and_server_recovers(app, client):
    executor = app.state.server.llm.core.executor
    real = executor.execute

    def broken(staged, batch):
        raise RuntimeError("boom")

    executor.execute = broken
    try:
        r = await client.post("/v1/embeddings", json={"input": "a"})
        assert _error(r, 500, "InternalServerError") == "Internal server error: RuntimeError"
    finally:
        executor.execute = real
    assert (await client.post("/v1/embeddings", json={"input": "a"})).status_code == 200


async def test_api_key(default_llm, client_for):
    from vllm_pool.engine.server import ServerConfig, build_app

    app = build_app(default_llm, ServerConfig(api_key="s3cret"))
    async with client_for(app) as c:
        assert (await c.get("/health")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = await c.post("/v1/embeddings", json={"input": "a"}, headers=headers)
            assert "Unauthorized" in _error(r, 401, "AuthenticationError")
            assert r.headers["www-authenticate"] == "Bearer"
        _error(await c.get("/v1/models"), 401, "AuthenticationError")
        _error(await c.get("/metrics"), 401, "AuthenticationError")
        ok = {"Authorization": "Bearer s3cret"}
        assert (await c.post("/v1/embeddings", json={"input": "a"}, headers=ok)).status_code == 200
        assert (await c.get("/v1/models", headers=ok)).status_code == 200
