"""The cross-request queue with a fake model: batching across requests, budget, drops, errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from vllm_pool.engine.server import Batcher
from vllm_pool.engine.server.errors import ClientDisconnected
from vllm_pool.engine.server.metrics import ServerMetrics
from vllm_pool.engine.types import Request

from vllm_pool import PoolingParams


class FakeModel:
    """Records every batch; returns ``(task, first token id)`` per request; can be held."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.delay = delay
        self.started = 0

    def __call__(self, requests: list[Request], task: str) -> list[tuple[str, int]]:
        self.started += 1
        self.gate.wait(10)
        time.sleep(self.delay)
        self.batches.append((task, [r.prompt_token_ids[0] for r in requests]))
        return [(task, r.prompt_token_ids[0]) for r in requests]


def reqs(ids: list[int], length: int = 4) -> list[Request]:
    return [
        Request(index=i, prompt_token_ids=[t] * length, params=PoolingParams()) for i, t in enumerate(ids)
    ]


async def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_requests_from_many_clients_share_a_batch():
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=1000, max_batch_size=64, metrics=ServerMetrics())
    model.gate.clear()
    first = asyncio.create_task(batcher.submit(reqs([1]), "embed"))
    await wait_until(lambda: model.started == 1)  # the first batch is running (held)
    others = [asyncio.create_task(batcher.submit(reqs([10 * k, 10 * k + 1]), "embed")) for k in range(2, 6)]
    await wait_until(lambda: batcher.queue_size == 8)
    model.gate.set()
    assert await first == [("embed", 1)]
    results = await asyncio.gather(*others)
    assert results == [[("embed", 10 * k), ("embed", 10 * k + 1)] for k in range(2, 6)]
    assert model.batches == [("embed", [1]), ("embed", [20, 21, 30, 31, 40, 41, 50, 51])]
    text = batcher.metrics.render()
    assert 'vllm_pool_batch_requests_sum{task="embed"} 5' in text
    await batcher.stop()


async def test_padded_budget_similar_lengths_and_task_grouping():
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=12, max_batch_size=2)
    model.gate.clear()
    blocker = asyncio.create_task(batcher.submit(reqs([0]), "embed"))
    await wait_until(lambda: model.started == 1)
    jobs = [
        asyncio.create_task(batcher.submit(reqs([1, 2, 3], length=4), "embed")),
        asyncio.create_task(batcher.submit(reqs([7], length=4), "classify")),
        asyncio.create_task(batcher.submit(reqs([4], length=20), "embed")),  # over budget: alone
        asyncio.create_task(batcher.submit(reqs([5, 6], length=6), "embed")),
    ]
    await wait_until(lambda: batcher.queue_size == 7)
    model.gate.set()
    await asyncio.gather(blocker, *jobs)
    assert model.batches == [
        ("embed", [0]),
        ("embed", [1, 2]),  # the oldest first; size cap 2
        ("classify", [7]),  # one task per batch; a request not served yet goes before [3]
        ("embed", [3, 5]),  # then the oldest again; the closest length that fits: 6 x 2 = 12
        ("embed", [4]),  # 20 tokens: over the budget with anything else
        ("embed", [6]),
    ]
    await batcher.stop()


async def test_disconnected_client_work_is_dropped():
    model = FakeModel()
    metrics = ServerMetrics()
    batcher = Batcher(model, max_batch_tokens=1000, max_batch_size=64, metrics=metrics, poll_interval=0.01)
    model.gate.clear()
    blocker = asyncio.create_task(batcher.submit(reqs([1]), "embed"))
    await wait_until(lambda: model.started == 1)
    gone = asyncio.Event()

    async def is_disconnected() -> bool:
        return gone.is_set()

    dropped = asyncio.create_task(batcher.submit(reqs([2, 3]), "embed", is_disconnected))
    kept = asyncio.create_task(batcher.submit(reqs([4]), "embed"))
    await wait_until(lambda: batcher.queue_size == 3)
    gone.set()
    with pytest.raises(ClientDisconnected):
        await dropped
    model.gate.set()
    await blocker
    assert await kept == [("embed", 4)]
    assert model.batches == [("embed", [1]), ("embed", [4])]
    assert 'vllm_pool_dropped_inputs_total{task="embed"} 2' in metrics.render()
    await batcher.stop()


async def test_cancelled_handler_work_is_dropped():
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=1000, max_batch_size=64)
    model.gate.clear()
    blocker = asyncio.create_task(batcher.submit(reqs([1]), "embed"))
    await wait_until(lambda: model.started == 1)
    victim = asyncio.create_task(batcher.submit(reqs([2]), "embed"))
    await wait_until(lambda: batcher.queue_size == 1)
    victim.cancel()
    model.gate.set()
    await blocker
    assert await batcher.submit(reqs([3]), "embed") == [("embed", 3)]
    assert model.batches == [("embed", [1]), ("embed", [3])]
    await batcher.stop()


async def test_failed_batch_fails_its_requests_only():
    calls = []

    def flaky(requests, task):
        calls.append(len(requests))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [r.prompt_token_ids[0] for r in requests]

    batcher = Batcher(flaky, max_batch_tokens=1000, max_batch_size=64)
    with pytest.raises(RuntimeError, match="boom"):
        await batcher.submit(reqs([1]), "embed")
    assert await batcher.submit(reqs([2, 3]), "embed") == [2, 3]
    assert batcher.alive
    await batcher.stop()


async def test_event_loop_not_blocked_by_the_model():
    batcher = Batcher(FakeModel(delay=0.5), max_batch_tokens=1000, max_batch_size=64)
    job = asyncio.create_task(batcher.submit(reqs([1]), "embed"))
    ticks = 0
    start = time.monotonic()
    while not job.done():
        await asyncio.sleep(0.01)
        ticks += 1
    assert time.monotonic() - start >= 0.45
    assert ticks >= 20  # the loop kept running while the model worked
    await batcher.stop()


async def test_disconnect_over_asgi_drops_pending_work(app, client):
    """A real HTTP request whose client goes away while queued never reaches the model."""
    state = app.state.server
    state.batcher.poll_interval = 0.01
    real, seen, gate = state.batcher.run, [], threading.Event()

    def held(requests, task):
        seen.append([r.prompt for r in requests])
        gate.wait(10)
        return real(requests, task)

    state.batcher.run = held
    first = asyncio.create_task(client.post("/v1/embeddings", json={"input": "first"}))
    await wait_until(lambda: len(seen) == 1)

    body = json.dumps({"input": ["gone one", "gone two"]}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/embeddings", "raw_path": b"/v1/embeddings", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 5555), "server": ("testserver", 80),
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 5)
    assert sent[0]["status"] == 499
    gate.set()
    assert (await first).status_code == 200
    assert (await client.post("/v1/embeddings", json={"input": "after"})).status_code == 200
    assert seen == [["first"], ["after"]]
    assert 'vllm_pool_dropped_inputs_total{task="embed"} 2' in state.metrics.render()


async def test_mixed_lengths_are_not_padded_together():
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=10_000, max_batch_size=64)
    model.gate.clear()
    blocker = asyncio.create_task(batcher.submit(reqs([0]), "embed"))
    await wait_until(lambda: model.started == 1)
    short_long = [
        asyncio.create_task(batcher.submit(reqs([k], length=10 if k % 2 else 200), "embed"))
        for k in range(1, 7)
    ]
    await wait_until(lambda: batcher.queue_size == 6)
    model.gate.set()
    await asyncio.gather(blocker, *short_long)
    assert model.batches == [("embed", [0]), ("embed", [1, 3, 5]), ("embed", [2, 4, 6])]
    await batcher.stop()


async def test_a_small_request_waits_for_one_batch_of_a_large_one():
    """Issue 15: batches alternate between the oldest input and the least-served request."""
    model = FakeModel()
    batcher = Batcher(model, max_batch_tokens=10_000, max_batch_size=4)
    model.gate.clear()
    blocker = asyncio.create_task(batcher.submit(reqs([0]), "embed"))
    await wait_until(lambda: model.started == 1)
    large = asyncio.create_task(batcher.submit(reqs(list(range(100, 116))), "embed"))
    await wait_until(lambda: batcher.queue_size == 16)
    small = asyncio.create_task(batcher.submit(reqs([7]), "embed"))
    await wait_until(lambda: batcher.queue_size == 17)
    model.gate.set()
    await asyncio.gather(blocker, large, small)
    batches = [ids for _, ids in model.batches]
    assert batches[:2] == [[0], [100, 101, 102, 103]]
    assert batches[2][0] == 7  # next, not after all four batches of the large one
    assert sorted(i for b in batches[2:] for i in b) == [7, *range(104, 116)]
    await batcher.stop()
