"""Bad clients against a live server on 127.0.0.1: no key, oversize bodies, slow headers and
bodies, half-closed and closed sockets, oversize and invalid texts, one huge request beside
small ones.

Each case gets a clear error in the documented shape (or a closed connection for a client
that never sends a request head), and the server keeps answering correctly. Every socket has
a timeout, so no case can hang the suite.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from live_server import LiveServer

pytest.importorskip("fastapi")

KEY = "fault-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 200_000
MAX_CHARS = 5_000
TIMEOUT = 1.0  # header and body timeouts of the server under test


@pytest.fixture(scope="module")
def server(default_llm):
    from vllm_pool.engine.server import ServerConfig, build_app

    config = ServerConfig(
        api_key=KEY, max_body_bytes=MAX_BODY, max_input_chars=MAX_CHARS, body_timeout=TIMEOUT,
        header_timeout=TIMEOUT, served_model_names=["minilm"],
    )  # fmt: skip
    with LiveServer(build_app(default_llm, config), config) as live:
        yield live


def assert_error(response: httpx.Response, code: int, text: str, param: str | None = None) -> None:
    body = response.json()
    assert response.status_code == code and body["code"] == code and body["object"] == "error", body
    assert text in body["message"] and body["param"] == param, body


def assert_still_serving(server, default_llm) -> None:
    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["still here"]}, headers=AUTH, timeout=60)
    assert r.status_code == 200
    expected = default_llm.embed(["still here"], use_tqdm=False)[0].outputs.embedding
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], expected, atol=1e-5)


def raw(server, data: bytes, shutdown: bool = False, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and return all it answers until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def head(path: str, length: int, auth: bool = True, extra: str = "") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"Content-Length: {length}"] + ([f"Authorization: Bearer {KEY}"] if auth else [])
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head_part, _, body = answer.partition(b"\r\n\r\n")
    return int(head_part.split(b" ")[1]), json.loads(body)


def test_key_checked_before_the_body_is_read(server, default_llm):
    # Headers announcing 50 MB, then nothing: the 401 comes without the body.
    code, body = status_and_body(raw(server, head("/v1/embeddings", 50_000_000, auth=False)))
    assert code == 401 and body["type"] == "AuthenticationError"
    for path in ("/docs", "/redoc", "/openapi.json", "/metrics", "/v1/models"):
        assert httpx.get(server.url + path, timeout=30).status_code == 401, path
        assert httpx.get(server.url + path, headers=AUTH, timeout=30).status_code == 200, path
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
    bad_key = {"Authorization": "Bearer x"}
    wrong = httpx.post(server.url + "/v1/embeddings", json={"input": "x"}, headers=bad_key, timeout=30)
    assert_error(wrong, 401, "Unauthorized")
    assert_still_serving(server, default_llm)


def test_oversize_bodies(server, default_llm):
    huge = "x" * 100
    body = json.dumps({"input": [huge] * (3 * MAX_BODY // 100)}).encode()
    r = httpx.post(server.url + "/v1/embeddings", content=body, headers=AUTH, timeout=30)  # sent whole
    assert_error(r, 413, f"the limit is {MAX_BODY} bytes (--max-body-bytes)")

    def stream():  # no Content-Length: the limit applies while the body streams in
        for _ in range(10):
            yield b" " * (MAX_BODY // 4)

    r = httpx.post(server.url + "/v1/embeddings", content=stream(), headers=AUTH, timeout=30)
    assert_error(r, 413, f"more than {MAX_BODY} bytes")
    code, answer = status_and_body(raw(server, head("/v1/embeddings", 10**12)))  # answered at once
    assert code == 413 and "1000000000000 bytes" in answer["message"]
    assert_still_serving(server, default_llm)


def test_slow_headers_and_bodies(server, default_llm):
    # Half a request head, then silence: the server closes the connection.
    assert raw(server, b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n") == b""
    assert raw(server, b"") == b""  # connected, sent nothing
    # A complete head and part of the body: a 408 in the error shape.
    code, body = status_and_body(raw(server, head("/v1/embeddings", 100) + b'{"input": '))
    assert code == 408 and body["type"] == "RequestTimeoutError" and "--body-timeout" in body["message"]
    assert_still_serving(server, default_llm)


def test_half_closed_client_gets_its_answer_with_the_option(default_llm):
    """--answer-half-closed: a client that shuts down its sending side after the request
    (``shutdown(SHUT_WR)``) still gets the answer."""
    from vllm_pool.engine.server import ServerConfig, build_app

    config = ServerConfig(api_key=KEY, answer_half_closed=True)
    payload = json.dumps({"input": "half closed"}).encode()
    with LiveServer(build_app(default_llm, config), config) as live:
        answer = raw(live, head("/v1/embeddings", len(payload)) + payload, shutdown=True)
    code, body = status_and_body(answer)
    assert code == 200
    expected = default_llm.embed(["half closed"], use_tqdm=False)[0].outputs.embedding
    np.testing.assert_allclose(body["data"][0]["embedding"], expected, atol=1e-5)


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_closed_client_queued_inputs_are_dropped(tiny_bert, protocol):
    """A client that gives up and closes its socket while its inputs wait in the queue is a
    disconnect (as with uvicorn's own protocol and vLLM): its queued inputs are dropped and
    counted, the request is logged as 499, and the queue is free well before they would
    have run."""
    from vllm_pool.engine.server import ServerConfig, build_app
    from vllm_pool.engine.server.connections import guarded_protocol

    from vllm_pool import LLM

    base = _protocol_class(protocol)
    llm = LLM(str(tiny_bert), max_num_batched_tokens=256)
    config = ServerConfig()
    app = build_app(llm, config)
    state = app.state.server
    record = llm.core.on_batch

    def slow(stats) -> None:  # a slow model: each batch takes at least 50 ms
        time.sleep(0.05)
        record(stats)

    llm.core.on_batch = slow
    payload = json.dumps({"input": [f"text number {i} " * 8 for i in range(300)]}).encode()
    lines = ["POST /v1/embeddings HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    request = ("\r\n".join([*lines, f"Content-Length: {len(payload)}"]) + "\r\n\r\n").encode() + payload
    dropped = lambda: sum(state.metrics.dropped.values.values())  # noqa: E731
    with LiveServer(app, config, http=guarded_protocol(config.header_timeout, base)) as live:
        sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        sock.sendall(request)
        _wait(lambda: state.engine.queue_size > 0, 60)  # tokenized and queued
        closed_at = time.monotonic()
        sock.close()  # the client gives up
        _wait(lambda: dropped() > 0 and state.engine.queue_size == 0, 10)
        assert time.monotonic() - closed_at < 5  # hundreds of 50 ms batches were left
        _wait(lambda: 'code="499",endpoint="/v1/embeddings"' in state.metrics.render(), 10)
        r = httpx.post(f"{live.url}/v1/embeddings", json={"input": ["still here"]}, timeout=60)
        assert r.status_code == 200
    assert 0 < dropped() < 300


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _protocol_class(protocol: str) -> type:
    if protocol == "httptools":
        pytest.importorskip("httptools")
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


@pytest.mark.parametrize(
    ("path", "payload", "code", "text", "param"),
    [
        ("/v1/embeddings", {"input": ["ok", "y" * (MAX_CHARS + 1)]}, 413,
         f"input[1] has {MAX_CHARS + 1} characters, the limit is {MAX_CHARS}", "input"),
        ("/v1/embeddings", {"input": "y" * (MAX_CHARS + 1)}, 413, "input has", "input"),
        ("/v1/embeddings", {"input": ["ok", "a\ud800b"]}, 400, "input[1] is not valid Unicode", "input"),
        ("/score", {"text_1": "a", "text_2": ["b", "c\udfff"]}, 400, "text_2[1] is not valid Unicode",
         "text_2"),
        ("/tokenize", {"prompt": "z" * (MAX_CHARS + 1)}, 413, "prompt has", "prompt"),
    ],
)  # fmt: skip
def test_bad_texts_are_named(server, path, payload, code, text, param):
    data = json.dumps(payload).encode()  # ASCII escapes keep lone surrogates sendable
    r = httpx.post(server.url + path, content=data, headers={**AUTH, "Content-Type": "application/json"})
    assert_error(r, code, text, param)


def test_one_huge_request_does_not_stall_small_ones(tiny_bert):
    """Small requests sent while a maximum-size request is tokenized are answered before its
    tokenization ends (it runs in slices); the queue side (slices as engine-core jobs) is in
    tests/server/test_engine_client."""
    from vllm_pool.engine.server import ServerConfig, build_app

    from vllm_pool import LLM

    llm = LLM(str(tiny_bert), max_num_batched_tokens=512)
    config = ServerConfig(max_input_chars=4_000)
    words = " ".join(f"w{i % 97}" for i in range(2_000))[:4_000]
    # 2 MB of text: many tokenizer and model slices (each text cut to the model's limit)
    big = {"input": [words] * 500, "truncate_prompt_tokens": -1}
    small_expected = llm.embed(["a small one"], use_tqdm=False)[0].outputs.embedding
    big_done, big_started, big_tokenized = threading.Event(), threading.Event(), threading.Event()
    results: dict[str, object] = {}
    make_requests = llm.make_requests
    tokenized = []

    def watched(prompts, *args, **kwargs):  # tells the test where the big request is
        if len(prompts) == 1:
            return make_requests(prompts, *args, **kwargs)
        big_started.set()
        out = make_requests(prompts, *args, **kwargs)
        tokenized.extend(out)
        if len(tokenized) == len(big["input"]):
            big_tokenized.set()
        return out

    llm.make_requests = watched
    with LiveServer(build_app(llm, config), config) as live:

        def send_big() -> None:
            r = httpx.post(live.url + "/v1/embeddings", json=big, timeout=300)
            results["big"] = r.status_code, len(r.json()["data"])
            big_done.set()

        thread = threading.Thread(target=send_big)
        thread.start()
        try:
            seen_busy = big_started.wait(120)  # its first slice is being tokenized
            finished_before_big = 0
            for _ in range(3):
                r = httpx.post(live.url + "/v1/embeddings", json={"input": "a small one"}, timeout=300)
                assert r.status_code == 200
                np.testing.assert_allclose(r.json()["data"][0]["embedding"], small_expected, atol=1e-5)
                finished_before_big += not big_tokenized.is_set()
        finally:
            thread.join(300)
    assert results["big"] == (200, 500)
    assert seen_busy, "the big request never reached the tokenizer"
    assert finished_before_big == 3  # answered between the big request's tokenizer slices


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_connection_guards_of_both_http_parsers(default_llm, protocol):
    """The guards hold on uvicorn's httptools protocol (used when installed) and on its h11
    fallback: a stalled head is closed, a head over MAX_HEADER_BYTES gets a 400, and (with
    answer_half_closed) a half-closed client gets its answer; the server keeps serving."""
    from vllm_pool.engine.server import ServerConfig, build_app
    from vllm_pool.engine.server.connections import MAX_HEADER_BYTES, guarded_protocol

    base = _protocol_class(protocol)
    config = ServerConfig(header_timeout=TIMEOUT, body_timeout=TIMEOUT, answer_half_closed=True)
    protocol_class = guarded_protocol(TIMEOUT, base, answer_half_closed=True)
    assert issubclass(protocol_class, base)
    with LiveServer(build_app(default_llm, config), config, http=protocol_class) as live:
        assert raw(live, b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n") == b""
        big_head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (MAX_HEADER_BYTES + 1024)
        assert raw(live, big_head + b"\r\n\r\n").split(b" ")[1] == b"400"
        payload = json.dumps({"input": "half closed"}).encode()
        lines = ["POST /v1/embeddings HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
        head_bytes = ("\r\n".join([*lines, f"Content-Length: {len(payload)}"]) + "\r\n\r\n").encode()
        code, body = status_and_body(raw(live, head_bytes + payload, shutdown=True))
        assert code == 200 and len(body["data"][0]["embedding"]) == 384
        r = httpx.post(f"{live.url}/v1/embeddings", json={"input": ["still here"]}, timeout=60)
        assert r.status_code == 200
