"""The server's async view of the engine core: submit a job, await it, drop it if the client goes.

There is no second queue here: every HTTP request becomes one job in the LLM's
:class:`~vllm_pool.engine.core.EngineCore`, batched with the other clients' jobs (and any
offline calls) by its one scheduler. The core's background thread drives the model loop, so
the event loop never waits on the model; this client awaits the job's future and, while it
waits, checks that the client is still connected.

A large server job (more tokens than an eighth of the token budget) runs in slices of that
size (``Job.slice_tokens``), so that a one-text request arriving behind it waits for a short
batch: on two CPU cores a full 2,048-token batch of MiniLM takes about 0.3 s, a 256-token
slice about 40 ms.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import weakref
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import Any

from vllm_pool.engine.batch_stats import BatchStats
from vllm_pool.engine.core import EngineCore
from vllm_pool.engine.scheduler import Job, TaskSpec
from vllm_pool.engine.server.errors import ClientDisconnected
from vllm_pool.engine.server.metrics import ServerMetrics
from vllm_pool.engine.types import Request

logger = logging.getLogger(__name__)

SLICE_OF_BUDGET = 8
"""A large server job puts at most ``max_num_batched_tokens // SLICE_OF_BUDGET`` tokens in a batch."""


class EngineClient:
    """Submits server jobs to ``core`` and records the core's batches in ``metrics``.

    Args:
        core: the engine core of the served LLM.
        metrics: where to record batch sizes, times and dropped inputs (optional).
    """

    def __init__(self, core: EngineCore, metrics: ServerMetrics | None = None) -> None:
        self.core = core
        self.metrics = metrics
        self._inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = (
            weakref.WeakKeyDictionary()
        )
        if metrics is not None:
            core.on_batch = self._record_batch
            core.on_drop = self._record_drop

    @property
    def queue_size(self) -> int:
        """Inputs queued and not yet scheduled."""
        return self.core.num_pending

    @property
    def alive(self) -> bool:
        """False when the core's background thread died."""
        return self.core.alive

    async def submit(
        self,
        requests: list[Request],
        tasks: TaskSpec,
        disconnected: Awaitable[Any] | None = None,
    ) -> dict[str, list[Any]]:
        """Queue ``requests`` for ``tasks`` and wait for ``{task: outputs in list order}``.

        Args:
            requests: the tokenized inputs.
            tasks: ``{task: per-request params or None}``.
            disconnected: a future (or task) that completes when the client goes away
                (a :class:`DisconnectWatch`'s ``future``); it is not cancelled here.

        Raises:
            ClientDisconnected: ``disconnected`` completed first; pending inputs were dropped.
        """
        self.core.start()  # the background driver (no-op when it runs)
        slice_tokens: int | None = max(1, self.core.scheduler.max_num_batched_tokens // SLICE_OF_BUDGET)
        if sum(r.num_tokens for r in requests) <= slice_tokens:
            slice_tokens = None  # a small job: it fits one short batch as it is
        job = self.core.submit(requests, tasks, slice_tokens=slice_tokens)
        future = self._awaitable(job.future)
        try:
            if disconnected is None:
                return await future
            await _first_done(future, asyncio.ensure_future(disconnected))
            if future.done():
                return future.result()
            self._cancel(job, future)
            raise ClientDisconnected("client disconnected")
        except asyncio.CancelledError:
            self._cancel(job, future)
            raise

    def _awaitable(self, done: Future[Any]) -> asyncio.Future[Any]:
        """An asyncio future that follows ``done`` (a job's future, resolved on the engine's
        thread). Unlike ``asyncio.wrap_future``, the jobs a batch resolves together wake the
        event loop once, not once each (:class:`_Inbox`). The callback holds ``future``, not
        ``done``: a reference cycle through ``done``'s callbacks would keep each request's
        job and outputs alive until the cyclic collector runs on the event loop."""
        loop = asyncio.get_running_loop()
        inbox = self._inboxes.get(loop)
        if inbox is None:
            inbox = self._inboxes[loop] = _Inbox(loop)
        future: asyncio.Future[Any] = loop.create_future()
        done.add_done_callback(functools.partial(inbox.post, future))
        return future

    @staticmethod
    def watch_disconnect(receive: Any, after: float = 0.0) -> DisconnectWatch:
        """A :class:`DisconnectWatch` on the ASGI ``receive`` channel (see there)."""
        return DisconnectWatch(receive, after)

    def _cancel(self, job: Job, future: asyncio.Future[Any]) -> None:
        """Drop ``job``'s queued inputs. Its asyncio ``future`` is cancelled first: no one
        awaits it any more, and the job's ``JobCancelled`` passed on to it would be logged
        as "Future exception was never retrieved" (the inbox skips a done future)."""
        future.cancel()
        self.core.cancel(job)

    def stop(self) -> None:
        """Stop the core's background thread (restarted by the next submit)."""
        self.core.stop()

    # ------------------------------------------------------------------ metrics hooks (engine threads)
    def _record_batch(self, stats: BatchStats) -> None:
        m, task = self.metrics, "+".join(stats.key)
        assert m is not None
        m.batch_size.observe(stats.num_prompts, task=task)
        m.batch_requests.observe(stats.num_jobs, task=task)
        m.batch_tokens.observe(stats.padded_tokens, task=task)
        m.batch_seconds.observe(stats.seconds, task=task)
        for seconds in stats.queue_seconds:
            m.queue_seconds.observe(seconds, task=task)

    def _record_drop(self, job: Job, n: int) -> None:
        assert self.metrics is not None
        self.metrics.dropped.inc(n, task="+".join(job.key))


class DisconnectWatch:
    """Its ``future`` completes when the ASGI ``receive`` channel says the client disconnected.

    Create it after the request body was read (the next message is ``http.disconnect``, sent
    when the connection closes) and :meth:`cancel` it when the request is answered. It
    starts listening ``after`` seconds (0: at once): a request answered sooner, as most are,
    costs a timer instead of a listening task, and a client that left meanwhile is still
    seen as soon as it starts.
    """

    def __init__(self, receive: Any, after: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = loop.create_future()
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if after > 0:
            self._timer = loop.call_later(after, self._start)
        else:
            self._start()

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self.future.done():
            self.future.set_result(None)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
        self.future.cancel()


async def _first_done(*futures: asyncio.Future[Any]) -> None:
    """Wait until one of ``futures`` is done: ``asyncio.wait(..., FIRST_COMPLETED)`` without
    its sets and timeout handling (this runs once per server request)."""
    if any(f.done() for f in futures):
        return
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)

    for f in futures:
        f.add_done_callback(wake)
    try:
        await waiter
    finally:
        for f in futures:
            f.remove_done_callback(wake)


class _Inbox:
    """Resolved jobs on their way to one event loop: the first posted after a flush schedules
    the next flush (one ``call_soon_threadsafe`` per batch of jobs); a flush passes each job's
    result or error to the future its request awaits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: collections.deque[tuple[asyncio.Future[Any], Future[Any]]] = collections.deque()
        self.scheduled = False

    def post(self, future: asyncio.Future[Any], done: Future[Any]) -> None:
        """From any thread: ``done`` is resolved; pass it on to ``future``."""
        self.items.append((future, done))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        self.scheduled = False  # first: a job posted from here on schedules another flush
        while self.items:
            future, done = self.items.popleft()
            if future.done():  # its request was cancelled
                continue
            exc = done.exception()
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result())
