"""The cross-request queue: inputs from many clients filled into token-budget batches.

As in text-embeddings-inference: every input of every request is one queue entry; a
single consumer task takes entries in arrival order (skipping other tasks' entries) while
the batch's padded size ``max_len x n`` fits the token budget, runs the batch in a worker
thread (the event loop is never blocked by the model), and hands each result back to its
request. Entries of a request whose client went away are dropped before they run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vllm_pool.engine.server.errors import ClientDisconnected
from vllm_pool.engine.server.metrics import ServerMetrics
from vllm_pool.engine.types import Request

logger = logging.getLogger(__name__)

RunFn = Callable[[list[Request], str], Sequence[Any]]
"""Blocking: run requests of one task, outputs in list order (``LLM.run_requests``)."""


@dataclass(eq=False)
class _Job:
    """One client request: its inputs for one task and the future its handler awaits."""

    task: str
    requests: list[Request]
    future: asyncio.Future[list[Any]]
    enqueued: float = field(default_factory=time.perf_counter)
    started: bool = False
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.results: list[Any] = [None] * len(self.requests)
        self.remaining = len(self.requests)

    def set(self, i: int, output: Any) -> None:
        self.results[i] = output
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(self.results)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done() and not self.cancelled:
            self.future.set_exception(exc)


@dataclass(eq=False)
class _Entry:
    job: _Job
    position: int  # index of the input in its job

    @property
    def request(self) -> Request:
        return self.job.requests[self.position]


class Batcher:
    """Batches inputs of concurrent requests under a padded-token budget.

    Args:
        run: blocking function that runs a list of requests of one task (in a worker thread).
        max_batch_tokens: budget of padded tokens (``max_len x n``) per batch; an input longer
            than the budget runs alone.
        max_batch_size: cap on inputs per batch.
        metrics: where to record batch sizes and times (optional).
        poll_interval: seconds between checks that a waiting client is still connected.
        executor: where ``run`` runs (default: one dedicated thread).
    """

    def __init__(
        self,
        run: RunFn,
        max_batch_tokens: int,
        max_batch_size: int,
        metrics: ServerMetrics | None = None,
        poll_interval: float = 0.1,
        executor: Executor | None = None,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be positive")
        self.run = run
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-pool-model")
        self._queue: deque[_Entry] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ client side
    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def alive(self) -> bool:
        """False when the consumer task died (it is restarted by the next submit)."""
        return self._task is None or not self._task.done()

    async def submit(
        self,
        requests: list[Request],
        task: str,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[Any]:
        """Queue ``requests`` for ``task`` and wait for their outputs (in list order).

        Raises:
            ClientDisconnected: ``is_disconnected()`` became true; pending inputs were dropped.
        """
        if not requests:
            return []
        self._ensure_started()
        assert self._loop is not None and self._wakeup is not None
        job = _Job(task, list(requests), self._loop.create_future())
        self._queue.extend(_Entry(job, i) for i in range(len(job.requests)))
        self._wakeup.set()
        try:
            while True:
                done, _ = await asyncio.wait({job.future}, timeout=self.poll_interval)
                if done:
                    return job.future.result()
                if is_disconnected is not None and await is_disconnected():
                    self._drop(job)
                    raise ClientDisconnected("client disconnected")
        except asyncio.CancelledError:
            self._drop(job)
            raise

    def _drop(self, job: _Job) -> None:
        job.cancelled = True
        if self.metrics is not None and job.remaining:
            self.metrics.dropped.inc(job.remaining, task=job.task)
        if not job.future.done():
            job.future.cancel()

    # ------------------------------------------------------------------ consumer side
    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (tests): start afresh
            self._loop, self._queue, self._wakeup = loop, deque(), asyncio.Event()
            self._task = None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._consume(), name="vllm-pool-batcher")

    async def stop(self) -> None:
        """Cancel the consumer task (pending requests stay unanswered)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None

    def next_batch(self) -> tuple[str, list[_Entry]] | None:
        """Take the next batch off the queue: arrival order, one task, within the budget."""
        queue, taken, skipped = self._queue, [], []
        task, max_len = None, 0
        while queue and len(skipped) < 4096:
            entry = queue.popleft()
            if entry.job.cancelled:
                continue
            task = task or entry.job.task
            if entry.job.task != task:
                skipped.append(entry)
                continue
            new_max = max(max_len, entry.request.num_tokens)
            if taken and (
                len(taken) >= self.max_batch_size or new_max * (len(taken) + 1) > self.max_batch_tokens
            ):
                queue.appendleft(entry)
                break
            taken.append(entry)
            max_len = new_max
        queue.extendleft(reversed(skipped))
        return (task, taken) if taken and task is not None else None

    async def _consume(self) -> None:
        assert self._loop is not None and self._wakeup is not None
        loop, wakeup = self._loop, self._wakeup
        while True:
            batch = self.next_batch()
            if batch is None:
                wakeup.clear()
                await wakeup.wait()
                continue
            task, entries = batch
            jobs = list(dict.fromkeys(e.job for e in entries))
            start = time.perf_counter()
            self._record_start(jobs, entries, start)
            try:
                outputs = await loop.run_in_executor(
                    self.executor, self.run, [e.request for e in entries], task
                )
                if len(outputs) != len(entries):
                    raise RuntimeError(
                        f"the engine returned {len(outputs)} outputs for {len(entries)} inputs"
                    )
            except Exception as exc:  # one bad batch fails its requests, not the server
                logger.exception("Batch of %d inputs (%s) failed", len(entries), task)
                for job in jobs:
                    job.fail(exc)
                continue
            if self.metrics is not None:
                self.metrics.batch_seconds.observe(time.perf_counter() - start, task=task)
            for entry, out in zip(entries, outputs):
                if not entry.job.cancelled:
                    entry.job.set(entry.position, out)

    def _record_start(self, jobs: list[_Job], entries: list[_Entry], now: float) -> None:
        if self.metrics is None:
            return
        m, task = self.metrics, entries[0].job.task
        m.batch_size.observe(len(entries), task=task)
        m.batch_requests.observe(len(jobs), task=task)
        m.batch_tokens.observe(max(e.request.num_tokens for e in entries) * len(entries), task=task)
        for job in jobs:
            if not job.started:
                job.started = True
                m.queue_seconds.observe(now - job.enqueued, task=task)
