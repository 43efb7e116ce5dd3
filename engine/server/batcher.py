"""The cross-request queue: inputs from many clients filled into token-budget batches.

As in text-embeddings-inference: every input of every request is one queue entry, and a
batch is filled while its padded size ``max_len x n`` fits the token budget. A single
consumer task takes the oldest entry, adds entries of the same task closest to it in
length (padding is paid for), runs the batch in a worker thread (the event loop is never
blocked by the model), and hands each result back to its request. Entries of a request
whose client went away are dropped before they run.
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
    served: int = 0  # inputs of this request put in a batch so far
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
        scan_limit: queue entries looked at to fill a batch with inputs of similar length.
        batch_overhead_tokens: the fixed cost of one forward pass, in tokens; an input joins
            a batch when the padding it causes costs less than that.
        executor: where ``run`` runs (default: one dedicated thread).
    """

    def __init__(
        self,
        run: RunFn,
        max_batch_tokens: int,
        max_batch_size: int,
        metrics: ServerMetrics | None = None,
        poll_interval: float = 0.1,
        scan_limit: int = 1024,
        batch_overhead_tokens: int = 32,
        executor: Executor | None = None,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be positive")
        self.run = run
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.scan_limit = max(1, scan_limit)
        self.batch_overhead_tokens = batch_overhead_tokens
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-pool-model")
        self._queue: deque[_Entry] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._fair_last = False  # the last batch started with another than the oldest input

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
        """Take the next batch off the queue: one task, within the padded-token budget.

        A batch starts with the oldest entry of the request that has had the fewest inputs
        batched so far (ties: the oldest entry), but never twice in a row with another than
        the oldest entry: a small request that arrives behind a large one waits for one of
        its batches, not for all of them, and no request waits forever. The rest of the
        batch is filled from the next ``scan_limit`` entries of the same task, closest in length
        first. An entry joins only if the padded tokens it adds are at most its own length
        plus ``batch_overhead_tokens`` (what a separate forward pass costs), so that mixed
        lengths do not pay for padding.
        """
        queue = self._queue
        while queue and queue[0].job.cancelled:
            queue.popleft()
        if not queue:
            return None
        window = [queue.popleft() for _ in range(min(len(queue), self.scan_limit))]
        first = 0
        if not self._fair_last:  # the oldest input of the least-served request (ties: the oldest)
            first = min(range(len(window)), key=lambda i: (window[i].job.cancelled, window[i].job.served))
        self._fair_last = first != 0  # then the oldest input again: no request waits forever
        window.insert(0, window.pop(first))
        anchor, task = window[0], window[0].job.task
        size = anchor.request.num_tokens
        live = [e for e in window[1:] if not e.job.cancelled]
        candidates = sorted(
            (e for e in live if e.job.task == task), key=lambda e: abs(e.request.num_tokens - size)
        )
        taken, max_len = [anchor], size
        for entry in candidates:
            if len(taken) >= self.max_batch_size:
                break
            n, length = len(taken), entry.request.num_tokens
            new_max = max(max_len, length)
            added = new_max * (n + 1) - max_len * n  # padded tokens this entry adds to the batch
            if new_max * (n + 1) <= self.max_batch_tokens and added <= length + self.batch_overhead_tokens:
                taken.append(entry)
                max_len = new_max
        for entry in taken:
            entry.job.served += 1
        chosen = {id(e) for e in taken}
        queue.extendleft(reversed([e for e in live if id(e) not in chosen]))
        return task, taken

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
