"""Fixes from a bug hunt on the server: a chunked body over the limit answered at once, one
``/pooling`` input cut to ``dimensions``, ``add_special_tokens``, the caller's names in score
errors, no unretrieved ``JobCancelled``, and vLLM's ``model: ""``, ``top_n``, ``/v2/rerank``,
``/version`` and per-pair score usage."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time

import numpy as np
import pytest
import torch
from fakes import FakeExecutor, reqs
from live_server import LiveServer
from vllm_pool.engine.core import EngineCore
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.scheduler import Scheduler
from vllm_pool.engine.server import EngineClient, ServerConfig, build_app
from vllm_pool.engine.server.errors import ClientDisconnected
from vllm_pool.engine.server.limits import GuardMiddleware
from vllm_pool.engine.server.metrics import ServerMetrics

import vllm_pool
from vllm_pool import LLM

TEXT = "hello world, again"
LONG = "the " * 400  # over MiniLM's 256 tokens


def _close(a, b, atol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), atol=atol, rtol=1e-4)


# ---------------------------------------------------------------------- bug 2: chunked 413
async def test_body_over_the_limit_in_its_last_chunk_is_answered_at_once():
    """The chunk that crosses --max-body-bytes is the body's last: nothing is left to drain,
    so the 413 does not wait for the drain's deadline."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b"x" * 3000, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client waits for the answer: nothing more comes
        raise AssertionError  # pragma: no cover

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:  # pragma: no cover - never reached
        raise AssertionError("the app must not run")

    guard = GuardMiddleware(app, api_key=None, max_body_bytes=2000, body_timeout=30.0)
    scope = {"type": "http", "path": "/v1/embeddings", "headers": [(b"transfer-encoding", b"chunked")]}
    started = time.monotonic()
    await asyncio.wait_for(guard(scope, receive, send), 5)
    assert time.monotonic() - started < 2
    assert sent[0]["status"] == 413 and b"--max-body-bytes" in sent[1]["body"]


def test_chunked_body_over_the_limit_on_a_socket(default_llm):
    config = ServerConfig(max_body_bytes=2000)
    big = b'{"input":"' + b"a " * 2000 + b'"}'
    request = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
    )
    with LiveServer(build_app(default_llm, config), config) as live:
        with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(request)
            answer = sock.recv(200)
            assert time.monotonic() - started < 3  # was 10 s
    assert answer.startswith(b"HTTP/1.1 413")


# ---------------------------------------------------------------------- bug 3: contiguous rows
async def test_pooling_one_input_cut_to_dimensions(tiny_bert, client_for):
    llm = LLM(str(tiny_bert), hf_overrides={"is_matryoshka": True})
    params = PoolingParams(dimensions=4, normalize=False)
    async with client_for(build_app(llm)) as client:
        for texts in (["hello world"], ["hello world", "cat dog"]):
            body = {"input": texts, "task": "token_embed", "dimensions": 4, "normalize": False}
            r = await client.post("/pooling", json=body)
            assert r.status_code == 200, r.text
            ref = llm.encode(texts, params, pooling_task="token_embed", use_tqdm=False)
            for d, o in zip(r.json()["data"], ref):
                assert (
                    np.asarray(d["data"]).shape == tuple(o.outputs.data.shape) == (len(o.prompt_token_ids), 4)
                )
                _close(d["data"], o.outputs.data)


def test_json_response_writes_non_contiguous_arrays_and_tensors():
    from vllm_pool.engine.server.responses import json_response

    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    body = {"a": grid[:, :2], "b": torch.arange(6.0).reshape(2, 3)[:, 1:], "c": np.float32(0.5)}
    assert json.loads(json_response(body).body) == {
        "a": grid[:, :2].tolist(),
        "b": [[1.0, 2.0], [4.0, 5.0]],
        "c": 0.5,
    }


# ---------------------------------------------------------------------- bug 4: add_special_tokens
async def test_add_special_tokens_false_embeds_the_ids_without_them(client, default_llm):
    ids = default_llm.get_tokenizer()(TEXT, add_special_tokens=False)["input_ids"]
    texts = [TEXT, "Another one"]
    no_special = [default_llm.get_tokenizer()(t, add_special_tokens=False)["input_ids"] for t in texts]
    ref = default_llm.embed([{"prompt_token_ids": i} for i in no_special], use_tqdm=False)
    r = await client.post("/v1/embeddings", json={"input": texts, "add_special_tokens": False})
    assert r.status_code == 200, r.text
    for d, o in zip(r.json()["data"], ref):
        _close(d["embedding"], o.outputs.embedding)
    assert r.json()["usage"]["prompt_tokens"] == sum(len(i) for i in no_special)
    # token ids are taken as given; the default adds the special tokens
    r = await client.post("/v1/embeddings", json={"input": [ids], "add_special_tokens": False})
    _close(r.json()["data"][0]["embedding"], ref[0].outputs.embedding)
    r = await client.post("/v1/embeddings", json={"input": TEXT})
    _close(r.json()["data"][0]["embedding"], default_llm.embed([TEXT], use_tqdm=False)[0].outputs.embedding)
    # /pooling: one row per token, none for the special tokens
    r = await client.post(
        "/pooling", json={"input": TEXT, "task": "token_embed", "add_special_tokens": False}
    )
    (token_ref,) = default_llm.encode([{"prompt_token_ids": ids}], pooling_task="token_embed", use_tqdm=False)
    assert len(r.json()["data"][0]["data"]) == len(ids)
    _close(r.json()["data"][0]["data"], token_ref.outputs.data)
    bad = await client.post("/v1/embeddings", json={"input": TEXT, "add_special_tokens": "no"})
    assert bad.status_code == 400 and "add_special_tokens" in bad.json()["message"]
    empty = await client.post("/v1/embeddings", json={"input": ["a", ""], "add_special_tokens": False})
    assert empty.status_code == 400 and "prompts[1] is empty" in empty.json()["message"]


async def test_classify_add_special_tokens_false(tiny_bert_cls3, client_for):
    llm = LLM(str(tiny_bert_cls3))
    ids = llm.get_tokenizer()(TEXT, add_special_tokens=False)["input_ids"]
    (ref,) = llm.classify([{"prompt_token_ids": ids}], use_tqdm=False)
    (with_special,) = llm.classify([TEXT], use_tqdm=False)
    async with client_for(build_app(llm)) as client:
        r = await client.post("/classify", json={"input": TEXT, "add_special_tokens": False})
        assert r.status_code == 200, r.text
        _close(r.json()["data"][0]["probs"], ref.outputs.probs)
        assert r.json()["usage"]["prompt_tokens"] == len(ids) < len(with_special.prompt_token_ids)
        r = await client.post("/classify", json={"input": TEXT})
        _close(r.json()["data"][0]["probs"], with_special.outputs.probs)


# ---------------------------------------------------------------------- bug 5: score errors
def test_offline_score_names_the_callers_input(default_llm):
    with pytest.raises(ValueError, match=r"\(data_2\[1\]") as err:
        default_llm.score("a", ["b", LONG, LONG], use_tqdm=False)
    assert "prompts[" not in str(err.value)
    with pytest.raises(ValueError, match=r"\(data_1\[1\]"):
        default_llm.score(["a", LONG], ["b", "c"], use_tqdm=False)
    with pytest.raises(ValueError, match=r"\(data_1;"):
        default_llm.score(LONG, ["b", "c"], use_tqdm=False)
    with pytest.raises(ValueError, match=r"truncate_prompt_tokens=1 \(data_1\) is smaller"):
        default_llm.score("a", ["b"], truncate_prompt_tokens=1, use_tqdm=False)


@pytest.mark.parametrize(
    ("path", "payload", "where"),
    [
        ("/rerank", {"query": "a", "documents": ["b", LONG]}, "(documents[1])"),
        ("/score", {"text_1": "a", "text_2": ["b", "c", LONG]}, "(text_2[2])"),
        ("/score", {"text_1": LONG, "text_2": ["b", "c"]}, "(text_1)"),
        ("/score", {"text_1": ["a"], "text_2": [LONG, "c"]}, "(text_2[0])"),
        ("/score", {"text_1": ["a", "b"], "text_2": ["b", LONG]}, "(text_2[1])"),
        ("/score", {"queries": ["a", LONG], "documents": ["b", "c"]}, "(queries[1])"),
    ],
)
async def test_score_errors_name_the_callers_field(client, path, payload, where):
    r = await client.post(path, json=payload)
    body = r.json()
    assert r.status_code == 400, body
    assert body["message"].endswith(f"Please reduce the length of the input. {where}"), body["message"]
    assert "maximum context length is 256 tokens" in body["message"]


# ---------------------------------------------------------------------- bug 6: no unretrieved errors
@pytest.mark.parametrize("how", ["disconnect", "cancel"])
async def test_dropped_job_logs_no_unretrieved_exception(how):
    loop = asyncio.get_running_loop()
    unretrieved: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    fake = FakeExecutor()
    client = EngineClient(EngineCore(fake, Scheduler(1000, 64)), metrics=ServerMetrics())
    try:
        fake.gate.clear()
        blocker = asyncio.create_task(client.submit(reqs([1]), {"embed": None}))
        while fake.started < 1:
            await asyncio.sleep(0.005)
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(gone.wait())
        victim = asyncio.create_task(client.submit(reqs([2, 3]), {"embed": None}, watcher))
        while client.queue_size < 2:
            await asyncio.sleep(0.005)
        if how == "disconnect":
            gone.set()
        else:
            victim.cancel()
        raised: type | None = None
        try:
            await victim
        except (ClientDisconnected, asyncio.CancelledError) as exc:
            raised = type(exc)
        del victim  # its error's traceback holds the submit's frame (as a server request drops it)
        assert raised is (ClientDisconnected if how == "disconnect" else asyncio.CancelledError)
        fake.gate.set()
        await blocker
        for _ in range(5):  # the inbox's flush, then the futures' finalizers
            await asyncio.sleep(0.01)
            gc.collect()
        assert 'vllm_pool_dropped_inputs_total{task="embed"} 2' in client.metrics.render()
    finally:
        loop.set_exception_handler(previous)
        client.stop()
    assert not unretrieved, unretrieved


# ---------------------------------------------------------------------- vLLM compatibility
async def test_empty_model_name_is_the_served_model(client, default_llm):
    r = await client.post("/v1/embeddings", json={"input": TEXT, "model": ""})
    assert r.status_code == 200 and r.json()["model"] == default_llm.model_name
    _close(r.json()["data"][0]["embedding"], default_llm.embed([TEXT], use_tqdm=False)[0].outputs.embedding)
    assert (await client.post("/v1/embeddings", json={"input": TEXT, "model": "other"})).status_code == 404


async def test_rerank_top_n_zero_or_less_returns_all_and_v2(client, default_llm):
    docs = ["a cat", "a dog", "the weather"]
    ref = [o.outputs.score for o in default_llm.score("pets", docs, use_tqdm=False)]
    order = sorted(range(3), key=lambda i: -ref[i])
    for top_n in (0, -1, -5):
        r = await client.post("/rerank", json={"query": "pets", "documents": docs, "top_n": top_n})
        assert r.status_code == 200, r.text
        assert [x["index"] for x in r.json()["results"]] == order
    v1 = (await client.post("/v1/rerank", json={"query": "pets", "documents": docs, "top_n": 2})).json()
    v2 = await client.post("/v2/rerank", json={"query": "pets", "documents": docs, "top_n": 2})
    assert v2.status_code == 200 and v2.json()["id"].startswith("rerank-")
    assert v2.json()["results"] == v1["results"] and v2.json()["usage"] == v1["usage"]
    assert [x["index"] for x in v1["results"]] == order[:2]


async def test_version(client):
    r = await client.get("/version")
    assert r.status_code == 200 and r.json() == {"version": vllm_pool.__version__}


async def test_bi_encoder_score_usage_counts_each_pair(client, default_llm):
    """vLLM's usage of an embedding model's /score and /rerank: every pair's tokens (the
    query counts once per pair, though it is embedded once)."""
    docs = ["a cat", "a dog sleeps", "the weather"]
    ref = default_llm.score("pets", docs, use_tqdm=False)
    per_pair = sum(len(o.prompt_token_ids) for o in ref)
    r = await client.post("/score", json={"text_1": "pets", "text_2": docs})
    assert r.json()["usage"]["prompt_tokens"] == r.json()["usage"]["total_tokens"] == per_pair
    r = await client.post("/rerank", json={"query": "pets", "documents": docs})
    assert r.json()["usage"] == {"prompt_tokens": per_pair, "total_tokens": per_pair}
    metrics = (await client.get("/metrics")).text  # the model ran the query once
    tok = default_llm.get_tokenizer()
    ran = sum(len(tok(t)["input_ids"]) for t in ["pets", *docs])
    assert f'vllm_pool_prompt_tokens_total{{endpoint="/rerank"}} {ran}' in metrics
