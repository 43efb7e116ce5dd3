"""The engine core: one request queue, one scheduler and one pipelined loop for every front.

``LLM`` calls, the server's HTTP handlers and the integrations all submit :class:`Job`
objects here. Whoever needs results drives the loop: an offline caller drives it in its own
thread until its jobs are done (then another waiting caller takes over); the server starts
one background thread (:meth:`EngineCore.start`) that drives while work is queued. Either
way the same :class:`~vllm_pool.engine.scheduler.Scheduler` fills every batch, across jobs.
On the CPU a batch driven from any thread but the main one runs on the process's model
thread, so that the model has one OpenMP team (:mod:`vllm_pool.engine.model_thread`).

The loop overlaps host and device work. For batch ``N`` it queues the forward pass and the
poolers on the device (asynchronous on CUDA), then, while the device runs, takes batch
``N + 1`` off the queue and stages its inputs (host tensors, pinned, copied on a side stream
by :meth:`ModelRunner.stage`), and hands batch ``N``'s pooled outputs to an output thread
that waits for their copy to the host and delivers them to their jobs. Tokenization runs
on its own thread before jobs are queued (``LLM._run`` submits chunks as they are ready).
On the CPU (no output thread) batch ``N`` has run when the forward call returns: its jobs
are answered before ``N + 1`` is taken, and the server's driver may wait a moment for
those clients' next requests (:meth:`EngineCore._gather`).

Fault isolation: a batch that fails (anything but a device out-of-memory error, which the
runner splits and retries) is run again job by job, so an input that fails inside the model
fails its own job only; the others get their results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from vllm_pool.engine.batch_stats import BatchStats, batch_callbacks
from vllm_pool.engine.fork_safe import ForkSafePool, reset_in_child
from vllm_pool.engine.scheduler import Job, JobCancelled, ScheduledBatch, Scheduler, TaskSpec
from vllm_pool.engine.types import Batch, Request

logger = logging.getLogger(__name__)


class Executor(Protocol):
    """The device side of the loop (:class:`~vllm_pool.engine.executor.ModelExecutor`; tests pass fakes)."""

    def stage(self, batch: Batch) -> Any:
        """Host work for ``batch``: build its inputs, start their copy to the device."""

    def execute(self, staged: Any, batch: ScheduledBatch) -> dict[str, list[Any]]:
        """Queue the forward pass and the poolers; ``{task: output per prompt, batch order}``."""

    def to_host(self, outputs: dict[str, list[Any]]) -> Callable[[], dict[str, list[Any]]]:
        """Start copying ``outputs`` to the host; the returned callable waits for them."""


class EngineCore:
    """The request queue, the scheduler and the loop that runs them.

    Args:
        executor: stages, runs and copies back batches.
        scheduler: the batching policy and queue.
        output_thread: deliver outputs from a worker thread (default: on CUDA, where their
            copy to the host overlaps the next batch); else in the driving thread.
    """

    def __init__(self, executor: Executor, scheduler: Scheduler, output_thread: bool = False) -> None:
        self.executor = executor
        self.scheduler = scheduler
        self._cond = threading.Condition()
        self._driving = False
        self._outputs = ForkSafePool("vllm-pool-outputs") if output_thread else None
        self._thread: threading.Thread | None = None
        self._stop = False
        self.on_batch: Callable[[BatchStats], None] | None = None
        self.on_drop: Callable[[Job, int], None] | None = None
        self.gather_fraction = 0.5  # see _gather (the server's driver only)
        self.gather_gap_s = 0.005
        self.max_gather_s = 0.1
        self._last_batch: tuple[int, int, float] | None = None  # jobs, prompts, seconds
        reset_in_child(self, EngineCore._forget_threads)

    def _forget_threads(self) -> None:
        """In a forked child: no parent thread drives or holds the lock there."""
        self._cond, self._driving, self._thread = threading.Condition(), False, None

    # ------------------------------------------------------------------ submitting
    def submit(
        self,
        requests: list[Request],
        tasks: TaskSpec,
        on_batch: Callable[[int], None] | None = None,
        slice_tokens: int | None = None,
    ) -> Job:
        """Queue ``requests`` for ``tasks``; returns the job (its ``future`` holds the results).

        ``slice_tokens``: see :class:`~vllm_pool.engine.scheduler.Job` (the server's jobs).
        """
        job = Job(list(requests), dict(tasks), on_batch, slice_tokens)
        if not job.requests:
            job.future.set_result(job.results)
            return job
        with self._cond:
            self.scheduler.add(job)
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        """Drop ``job``'s prompts that have not run; its future raises :class:`JobCancelled`."""
        with self._cond:
            job.cancelled = True
            dropped = self.scheduler.remove(job)
            job.fail(JobCancelled("the request was cancelled"))
        if dropped and self.on_drop is not None:
            self.on_drop(job, dropped)

    @property
    def num_pending(self) -> int:
        with self._cond:
            return self.scheduler.num_pending

    def run(
        self, requests: list[Request], tasks: TaskSpec, on_batch: Callable[[int], None] | None = None
    ) -> dict[str, list[Any]]:
        """Submit and wait: ``{task: outputs in list order}`` (drives the loop if no one else does)."""
        job = self.submit(requests, tasks, on_batch)
        return self.wait([job])[0]

    def wait(self, jobs: list[Job], more: Callable[[], bool] | None = None) -> list[dict[str, list[Any]]]:
        """Wait for ``jobs``, driving the loop while no one else does; their results in order.

        Args:
            jobs: the jobs to wait for; the list may grow while ``more()`` is true (chunks of
                a large call queued by a tokenizer thread).
            more: true while more jobs may still be appended to ``jobs``.

        The first failing job's error is raised and the other jobs are cancelled. An
        interrupt (``KeyboardInterrupt``) cancels them too.
        """
        try:
            # until every job is answered, not only scheduled: a batch in flight elsewhere may
            # come back to the queue (its driver interrupted), and then this caller drives it
            self._drive_until(
                lambda: (
                    (more is None or not more())
                    and all(j.done for j in jobs)
                    or any(j.future.done() and j.future.exception() is not None for j in jobs)
                )
            )
            return [j.future.result() for j in list(jobs)]
        except BaseException:
            for j in list(jobs):
                if not j.done:
                    self.cancel(j)
            raise

    # ------------------------------------------------------------------ driving
    def start(self) -> None:
        """Drive the loop from a background thread (the server); offline callers then only wait."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._background, name="vllm-pool-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the background thread (after the batch it is running); queued jobs stay queued."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop the background thread and the output thread."""
        self.stop()
        if self._outputs is not None:
            self._outputs.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        """False when the background thread died (it is restarted by :meth:`start`)."""
        return self._thread is None or self._thread.is_alive() or self._stop

    def _background(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (self._driving or not self.scheduler.has_work()):
                    self._cond.wait()
                if self._stop:
                    return
                self._driving = True
            try:
                self._loop(lambda: self._stop, gather=True)
            except Exception:  # a bug in the loop itself: log it, keep serving
                logger.exception("The engine loop failed")
            finally:
                with self._cond:
                    self._driving = False
                    self._cond.notify_all()

    def _drive_until(self, done: Callable[[], bool]) -> None:
        """Drive the loop (whenever no one else does) until ``done()``; else wait for it."""
        while True:
            with self._cond:
                while True:
                    if done():
                        return
                    if not self._driving and self.scheduler.has_work():
                        self._driving = True
                        break
                    self._cond.wait(0.05)  # woken when work is queued or delivered
            try:
                self._loop(done)
            finally:
                with self._cond:
                    self._driving = False
                    self._cond.notify_all()

    def _gather(self, done: Callable[[], bool]) -> None:
        """After a batch that answered several jobs, wait a little for their clients' next ones.

        Clients answered together come back together, but their requests reach the queue one
        by one (HTTP, JSON, tokenization on a shared event loop), and a loop that took each
        as it came would run strings of one-prompt batches, at several times the cost per
        prompt of a full one on the CPU (and slowing the event loop it competes with). So
        while fewer prompts are queued than the clients in play (the last batch's, plus those
        that arrived while it ran) and fewer tokens than one batch takes, the loop waits:
        for the first arrival, then as long as arrivals keep coming less than
        ``gather_gap_s`` apart, at most ``gather_fraction`` of the last batch's time (and
        ``max_gather_s``). A lone client (a last batch of one job) never waits.
        """
        last = self._last_batch
        if last is None or last[0] < 2 or self.max_gather_s <= 0:
            return
        jobs, prompts, seconds = last
        budget = self.scheduler.max_num_batched_tokens
        now = time.perf_counter()
        deadline = now + min(self.max_gather_s, self.gather_fraction * seconds)
        with self._cond:
            seen, quiet_from = self.scheduler.num_pending, deadline
            target = min(prompts + seen, self.scheduler.max_num_seqs)
            while not done() and seen < target and self.scheduler.pending_tokens < budget:
                now = time.perf_counter()
                if now >= min(deadline, quiet_from):
                    return
                self._cond.wait(min(deadline, quiet_from) - now)
                pending = self.scheduler.num_pending
                if pending != seen:  # an arrival: wait for the next one a gap longer
                    seen, quiet_from = pending, time.perf_counter() + self.gather_gap_s

    def _next(self, done: Callable[[], bool]) -> ScheduledBatch | None:
        with self._cond:
            if done():
                return None
            return self.scheduler.next_batch()

    def _loop(self, done: Callable[[], bool], gather: bool = False) -> None:
        """Run batches until ``done()`` or the queue is empty, one batch staged ahead.

        ``gather`` (the server's driver): see :meth:`_gather`.
        """
        current = self._next(done)
        staged = self._stage(current) if current is not None else None
        deliveries: list[Any] = []  # the output thread's, checked in order
        try:
            while current is not None:
                start = time.perf_counter()
                outputs = self._execute(current, staged)
                if outputs is not None and self._outputs is None:
                    # no output thread (the CPU: the batch has run): answer its jobs before
                    # the next batch is taken, so that returning clients can join it
                    self._deliver_async(current, outputs, start)
                    outputs = None
                    if gather:
                        self._gather(done)
                upcoming = self._next(done)  # host work for N + 1 while the device runs N
                upcoming_staged = self._stage(upcoming) if upcoming is not None else None
                if outputs is not None:
                    deliveries.append(self._deliver_async(current, outputs, start))
                    while len(deliveries) > 1 and deliveries[0].done():
                        deliveries.pop(0).result()  # a delivery's own failure surfaces here
                current, staged = upcoming, upcoming_staged
            for delivery in deliveries:
                delivery.result()
        except BaseException:
            if current is not None:  # staged but never run: back to the queue
                self._requeue(current)
            raise

    def _stage(self, scheduled: ScheduledBatch) -> Any:
        try:
            return self.executor.stage(scheduled.batch)
        except Exception as exc:  # host-side failure: isolate like a model failure
            logger.debug("Staging a batch failed: %s", exc)
            return None

    def _execute(self, scheduled: ScheduledBatch, staged: Any) -> dict[str, list[Any]] | None:
        """Run ``scheduled``; on failure, isolate the failing job(s) and return None."""
        try:
            if staged is None:
                staged = self.executor.stage(scheduled.batch)
            return self.executor.execute(staged, scheduled)
        except Exception as exc:
            self._isolate(scheduled, exc)
            return None

    def _isolate(self, scheduled: ScheduledBatch, exc: Exception) -> None:
        """Run each job of a failed batch on its own; a job that still fails gets its error."""
        jobs = scheduled.jobs
        if len(jobs) == 1:
            n = len(scheduled.entries)
            logger.warning("A batch of %d prompts failed: %s: %s", n, type(exc).__name__, exc)
            self.fail(jobs[0], exc)
            return
        logger.warning("A batch of %d jobs failed (%s); running them one by one", len(jobs), exc)
        for job in jobs:
            own = scheduled.only(job)
            start = time.perf_counter()
            try:
                outputs = self.executor.execute(self.executor.stage(own.batch), own)
            except Exception as job_exc:
                self.fail(job, job_exc)
                continue
            self._deliver_async(own, outputs, start).result()

    def fail(self, job: Job, exc: BaseException) -> None:
        """Fail ``job`` with ``exc`` (its prompts that have not run are dropped)."""
        with self._cond:
            self.scheduler.remove(job)
            job.fail(exc)
            self._cond.notify_all()

    def _requeue(self, scheduled: ScheduledBatch) -> None:
        with self._cond:
            for job in reversed(scheduled.jobs):  # appended left: they keep their order
                if not job.done:
                    job.requeue([p for j, p in scheduled.entries if j is job])
                    if job not in self.scheduler.jobs:
                        self.scheduler.jobs.appendleft(job)
            self._cond.notify_all()

    def _deliver_async(self, scheduled: ScheduledBatch, outputs: dict[str, list[Any]], start: float) -> Any:
        """Copy outputs to the host and hand them to their jobs (on the output thread if any)."""
        try:
            wait = self.executor.to_host(outputs)
        except Exception as exc:
            self._isolate(scheduled, exc)
            return _DONE
        if self._outputs is None:
            self._deliver(scheduled, wait, start)
            return _DONE
        return self._outputs.submit(self._deliver, scheduled, wait, start)

    def _deliver(
        self, scheduled: ScheduledBatch, wait: Callable[[], dict[str, list[Any]]], start: float
    ) -> None:
        try:
            outputs = wait()
        except Exception as exc:  # an error surfacing at the copy (asynchronous device work)
            for job in scheduled.jobs:
                self.fail(job, exc)
            return
        now = time.perf_counter()
        by_job: dict[Job, list[int]] = {}
        for i, (job, _) in enumerate(scheduled.entries):
            by_job.setdefault(job, []).append(i)
        self._last_batch = (len(by_job), len(scheduled.entries), now - start)
        # metrics and progress first: a caller woken by its results sees them counted
        interrupt = batch_callbacks(self, scheduled, by_job, start, now)
        with self._cond:
            for job, rows in by_job.items():
                if not job.done:
                    positions = [scheduled.entries[i][1] for i in rows]
                    job.deliver({t: [outs[i] for i in rows] for t, outs in outputs.items()}, positions)
            self._cond.notify_all()
        if interrupt is not None:
            raise interrupt


class _Done:
    def result(self) -> None:
        return None


_DONE = _Done()
