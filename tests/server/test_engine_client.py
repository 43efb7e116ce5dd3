"""The server's async view of the engine core: shared batches, metrics, disconnects, a free event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from fakes import FakeExecutor, reqs
from vllm_pool.engine.core import EngineCore
from vllm_pool.engine.scheduler import Scheduler
from vllm_pool.engine.server import EngineClient
from vllm_pool.engine.server.errors import ClientDisconnected
from vllm_pool.engine.server.metrics import ServerMetrics


async def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def make_client(**kwargs) -> tuple[EngineClient, FakeExecutor]:
    fake = FakeExecutor()
    core = EngineCore(fake, Scheduler(1000, 64))
    return EngineClient(core, **kwargs), fake


async def test_requests_from_many_clients_share_a_batch_and_are_counted():
    client, fake = make_client(metrics=ServerMetrics())
    fake.gate.clear()
    first = asyncio.create_task(client.submit(reqs([1]), {"embed": None}))
    await wait_until(lambda: fake.started == 1)
    others = [
        asyncio.create_task(client.submit(reqs([10 * k, 10 * k + 1]), {"embed": None})) for k in range(2, 6)
    ]
    await wait_until(lambda: client.queue_size == 8)
    fake.gate.set()
    assert await first == {"embed": [("embed", 1)]}
    results = await asyncio.gather(*others)
    assert results == [{"embed": [("embed", 10 * k), ("embed", 10 * k + 1)]} for k in range(2, 6)]
    assert [ids for _, ids in fake.batches] == [[1], [20, 21, 30, 31, 40, 41, 50, 51]]
    text = client.metrics.render()
    assert 'vllm_pool_batch_requests_sum{task="embed"} 5' in text
    assert 'vllm_pool_batch_size_sum{task="embed"} 9' in text
    client.stop()


async def test_disconnected_client_work_is_dropped():
    metrics = ServerMetrics()
    client, fake = make_client(metrics=metrics)
    fake.gate.clear()
    blocker = asyncio.create_task(client.submit(reqs([1]), {"embed": None}))
    await wait_until(lambda: fake.started == 1)
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(gone.wait())  # completes when the client goes
    dropped = asyncio.create_task(client.submit(reqs([2, 3]), {"embed": None}, watcher))
    kept = asyncio.create_task(client.submit(reqs([4]), {"embed": None}))
    await wait_until(lambda: client.queue_size == 3)
    gone.set()
    with pytest.raises(ClientDisconnected):
        await dropped
    fake.gate.set()
    await blocker
    assert await kept == {"embed": [("embed", 4)]}
    assert [ids for _, ids in fake.batches] == [[1], [4]]
    assert 'vllm_pool_dropped_inputs_total{task="embed"} 2' in metrics.render()
    client.stop()


async def test_cancelled_handler_work_is_dropped():
    client, fake = make_client()
    fake.gate.clear()
    blocker = asyncio.create_task(client.submit(reqs([1]), {"embed": None}))
    await wait_until(lambda: fake.started == 1)
    victim = asyncio.create_task(client.submit(reqs([2]), {"embed": None}))
    await wait_until(lambda: client.queue_size == 1)
    victim.cancel()
    await wait_until(lambda: client.queue_size == 0)
    fake.gate.set()
    await blocker
    assert await client.submit(reqs([3]), {"embed": None}) == {"embed": [("embed", 3)]}
    assert [ids for _, ids in fake.batches] == [[1], [3]]
    client.stop()


async def test_event_loop_not_blocked_by_the_model():
    client, fake = make_client()
    fake.gate.clear()
    job = asyncio.create_task(client.submit(reqs([1]), {"embed": None}))
    ticks = 0
    while fake.started == 0 or ticks < 20:  # the loop keeps running while the model is held
        await asyncio.sleep(0.005)
        ticks += 1
    assert not job.done()
    fake.gate.set()
    assert await job == {"embed": [("embed", 1)]}
    assert client.alive
    client.stop()


async def test_disconnect_over_asgi_drops_pending_work(app, client):
    """A real HTTP request whose client goes away while queued never reaches the model."""
    state = app.state.server
    executor = state.llm.core.executor
    real, seen, gate = executor.execute, [], threading.Event()

    def held(staged, batch):
        seen.append([r.prompt for r in staged.batch.requests])
        gate.wait(10)
        return real(staged, batch)

    executor.execute = held
    try:
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
    finally:
        gate.set()
        executor.execute = real
    assert seen == [["first"], ["after"]]
    assert 'vllm_pool_dropped_inputs_total{task="embed"} 2' in state.metrics.render()


async def test_a_small_request_joins_the_next_short_batch_of_a_large_one():
    """Issue 15 (head of line), on the engine core: a large request is queued in parts
    (``limits.submit_in_slices``, two at a time), and its jobs put at most an eighth of the
    token budget in a batch (``Job.slice_tokens``), so a small request that arrives meanwhile
    runs in the next batch, alone, not after the whole request."""
    from vllm_pool.engine.server.limits import submit_in_slices

    fake = FakeExecutor()
    client = EngineClient(EngineCore(fake, Scheduler(32, 4)))  # 4-token prompts; slices of 4 tokens
    fake.gate.clear()
    blocker = asyncio.create_task(client.submit(reqs([0]), {"embed": None}))
    await wait_until(lambda: fake.started == 1)

    async def submit(chunk):
        return (await client.submit(chunk, {"embed": None}))["embed"]

    large = asyncio.create_task(submit_in_slices(submit, reqs(list(range(100, 116))), 16))
    await wait_until(lambda: client.queue_size == 8)  # two slices of four queued, not sixteen
    small = asyncio.create_task(client.submit(reqs([7]), {"embed": None}))
    await wait_until(lambda: client.queue_size == 9)
    fake.gate.set()
    await blocker
    assert await small == {"embed": [("embed", 7)]}
    assert await large == [("embed", i) for i in range(100, 116)]  # every slice, in order
    batches = [ids for _, ids in fake.batches]
    assert batches[:2] == [[0], [7]]  # the small one goes alone, ahead of the slices (one prompt each)
    assert batches[2:] == [[i] for i in range(100, 116)]
    client.stop()


async def test_jobs_resolved_together_wake_the_event_loop_once(monkeypatch):
    """Jobs the engine's thread resolves together reach their requests through one
    ``call_soon_threadsafe`` (``asyncio.wrap_future`` makes one per job), errors included,
    and a cancelled request is skipped."""
    from concurrent.futures import Future

    loop = asyncio.get_running_loop()
    wakeups = []
    real = loop.call_soon_threadsafe

    def counting(callback, *args, **kwargs):
        wakeups.append(getattr(callback, "__qualname__", repr(callback)))
        return real(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    client, _ = make_client()
    jobs = [Future() for _ in range(8)]
    awaited = [client._awaitable(job) for job in jobs]
    awaited[3].cancel()  # its client went away

    def engine_thread() -> None:  # one batch answers all eight, one of them with an error
        for i, job in enumerate(jobs):
            job.set_exception(RuntimeError("boom")) if i == 5 else job.set_result(i)

    worker = threading.Thread(target=engine_thread)
    worker.start()
    worker.join()  # the event loop is held here: nothing is flushed yet
    assert wakeups == ["_Inbox.flush"]
    results = await asyncio.gather(*awaited, return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4] == 4 and results[6:] == [6, 7]
    assert isinstance(results[3], asyncio.CancelledError) and str(results[5]) == "boom"
    assert wakeups == ["_Inbox.flush"]
    done = Future()
    done.set_result("later")  # a later batch schedules its own flush
    assert await client._awaitable(done) == "later" and wakeups == ["_Inbox.flush"] * 2


async def test_a_request_leaves_no_reference_cycle():
    """A served job's future (and through it its outputs) is freed by reference counting,
    not left to the cyclic collector, whose full collections stall a loaded event loop."""
    import concurrent.futures
    import gc

    client, _ = make_client()
    assert await client.submit(reqs([1]), {"embed": None}) == {"embed": [("embed", 1)]}  # warm
    gc.collect()
    gc.disable()
    try:
        for k in range(5):
            await client.submit(reqs([k]), {"embed": None})
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kept = [o for o in gc.garbage if isinstance(o, concurrent.futures.Future)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        client.stop()
    assert kept == []


async def test_disconnect_watch_listens_only_after_its_delay():
    """A request answered within the delay never reads the channel (a timer, no task); a
    client gone meanwhile is seen as soon as the watch starts; ``after=0`` starts at once."""
    from vllm_pool.engine.server.engine_client import DisconnectWatch

    reads = []

    async def gone():
        reads.append(1)
        return {"type": "http.disconnect"}

    quick = DisconnectWatch(gone, after=0.05)
    await asyncio.sleep(0)
    quick.cancel()
    await asyncio.sleep(0.1)
    assert reads == [] and quick.future.cancelled()

    slow = DisconnectWatch(gone, after=0.05)
    await asyncio.sleep(0.01)
    assert not slow.future.done() and reads == []
    await asyncio.wait_for(slow.future, 2)
    assert reads == [1]
    slow.cancel()

    at_once = DisconnectWatch(gone)
    await asyncio.wait_for(at_once.future, 2)
    assert reads == [1, 1]
