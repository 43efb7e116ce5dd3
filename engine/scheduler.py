"""The request queue and its one batching policy, shared by offline calls and the server.

A :class:`Job` is one caller's request: tokenized prompts for one set of tasks (``LLM.embed``
of a list, one HTTP request, one chunk of a large offline call). :class:`Scheduler` keeps
the jobs in arrival order and fills every batch under a token budget:

* the oldest job with pending prompts goes first (no request waits forever), its longest
  prompt first: a job's prompts are sorted by token count when it is queued, so taking them
  in order keeps each batch's lengths close (the padding a padded model pays for);
* the batch is then filled with prompts of later jobs that run the same tasks, closest in
  length first (continuous batching across requests);
* a padded batch costs ``max_len x n`` tokens (TEI's rule). A prompt joins only while the
  padded tokens it adds are at most its own length plus ``batch_overhead_tokens`` (what a
  separate forward pass costs), so mixed lengths do not pay for padding. A packed batch
  (no padding) costs its real tokens, and every prompt that fits joins;
* a prompt longer than the budget runs alone;
* a job that needs more than one batch keeps a quarter of each batch's budget for the jobs
  waiting behind it that fit there whole (one-text requests beside a large one): they ride
  along with its next batch instead of waiting for all of it (head of line);
* a large server request's jobs carry ``slice_tokens``: a batch holds at most that many
  tokens of such jobs, and when small jobs wait behind one, every other batch is theirs
  alone. A request arriving while a large one runs waits for one short batch, then runs
  in a batch of small jobs. Offline calls leave it unset: nobody arrives behind them, and
  full batches run a little faster.

The scheduler is plain data and policy (no threads, no locks): :class:`~vllm_pool.engine.core.EngineCore`
owns one and calls it under its lock.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.types import Batch, Request

TaskSpec = dict[str, list[PoolingParams] | None]
"""``{task: per-request params}`` of a job; ``None`` means each request's own params."""


class JobCancelled(Exception):
    """The job was cancelled before all its prompts ran (client gone, caller interrupted)."""


@dataclass(eq=False)
class Job:
    """One caller's tokenized prompts for one set of tasks, and their results.

    Attributes:
        requests: the tokenized prompts.
        tasks: ``{task: per-request params or None}``; every task pools the same forward pass.
        future: resolved with ``{task: [output per request, in list order]}``, or the error
            of this job's own failing input, or :class:`JobCancelled`.
        on_batch: called (outside the engine's lock) with the number of this job's prompts
            each finished batch held (progress bars).
        slice_tokens: a large job's share of a batch: a batch holds at most this many
            tokens of jobs that set it (``None``: no cap); see the module docstring.
    """

    requests: list[Request]
    tasks: TaskSpec
    on_batch: Callable[[int], None] | None = None
    slice_tokens: int | None = None
    future: Future[dict[str, list[Any]]] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.key = tuple(self.tasks)
        order = sorted(range(len(self.requests)), key=lambda i: -self.requests[i].num_tokens)
        self.pending: list[int] = order  # positions not yet scheduled, longest first
        self._neg_lengths = [-self.requests[i].num_tokens for i in order]
        self.results: dict[str, list[Any]] = {t: [None] * len(self.requests) for t in self.tasks}
        self.remaining = len(self.requests)
        self.started = False
        self.cancelled = False
        self.first_run: float | None = None  # when its first batch ran (queue time)
        self.yielded = False  # a sliced job that let small jobs go first in the last batch

    @property
    def done(self) -> bool:
        return self.future.done()

    def length(self, k: int) -> int:
        """Token count of the ``k``-th pending prompt."""
        return -self._neg_lengths[k]

    def take(self, start: int, stop: int) -> list[int]:
        """Remove pending prompts ``start:stop`` and return their positions."""
        taken = self.pending[start:stop]
        del self.pending[start:stop], self._neg_lengths[start:stop]
        return taken

    def requeue(self, positions: Sequence[int]) -> None:
        """Put scheduled positions back (a batch that was staged but never ran)."""
        merged = sorted(set(self.pending) | set(positions), key=lambda i: -self.requests[i].num_tokens)
        self.pending[:] = merged
        self._neg_lengths[:] = [-self.requests[i].num_tokens for i in merged]

    def first_at_most(self, length: int) -> int:
        """Index of the first pending prompt not longer than ``length``."""
        return bisect.bisect_left(self._neg_lengths, -length)

    def params(self, task: str, position: int) -> PoolingParams:
        given = self.tasks[task]
        return given[position] if given is not None else self.requests[position].params

    def deliver(self, task_outputs: dict[str, list[Any]], positions: Sequence[int]) -> bool:
        """Store outputs of ``positions``; resolve the future when all are in. True if it did."""
        for task, outs in task_outputs.items():
            column = self.results[task]
            for pos, out in zip(positions, outs):
                column[pos] = out
        self.remaining -= len(positions)
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(self.results)
            return True
        return False

    def fail(self, exc: BaseException) -> None:
        """Fail the job (its pending prompts are dropped by the scheduler)."""
        self.pending.clear()
        self._neg_lengths.clear()
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass
class ScheduledBatch:
    """A batch and where each of its prompts came from (``entries[i]`` is ``(job, position)``)."""

    key: tuple[str, ...]
    entries: list[tuple[Job, int]]
    budget: int | None = None  # the token budget it was scheduled under

    @property
    def batch(self) -> Batch:
        return Batch([job.requests[pos] for job, pos in self.entries], self.budget)

    def only(self, job: Job) -> ScheduledBatch:
        """The part of this batch that came from ``job``."""
        return ScheduledBatch(self.key, [(j, p) for j, p in self.entries if j is job], self.budget)

    @property
    def jobs(self) -> list[Job]:
        return list(dict.fromkeys(job for job, _ in self.entries))

    def params(self, task: str) -> list[PoolingParams] | None:
        """Per-prompt params of ``task`` (``None``: every prompt's own, the common case)."""
        if all(job.tasks[task] is None for job, _ in self.entries):
            return None
        return [job.params(task, pos) for job, pos in self.entries]


class Scheduler:
    """Jobs in arrival order, and the batching policy (see the module docstring).

    Args:
        max_num_batched_tokens: token budget of one forward pass (padding included when not
            ``packed``).
        max_num_seqs: cap on prompts per forward pass.
        packed: batches run packed (no padding): the budget counts real tokens.
        batch_overhead_tokens: the fixed cost of one forward pass, in tokens (padded only).
        scan_jobs: later jobs looked at to fill a batch.
    """

    def __init__(
        self,
        max_num_batched_tokens: int,
        max_num_seqs: int,
        packed: bool = False,
        batch_overhead_tokens: int = 32,
        scan_jobs: int = 256,
    ) -> None:
        self.max_num_batched_tokens = self.max_num_seqs = 1
        self.set_limits(max_num_batched_tokens, max_num_seqs)
        self.packed = packed
        self.batch_overhead_tokens = batch_overhead_tokens
        self.scan_jobs = max(1, scan_jobs)
        self.jobs: deque[Job] = deque()

    def set_limits(self, max_num_batched_tokens: int | None = None, max_num_seqs: int | None = None) -> None:
        """Change the token budget and / or the cap on prompts per batch (from the next batch
        on); ``None`` leaves a limit as it is."""
        limits = {"max_num_batched_tokens": max_num_batched_tokens, "max_num_seqs": max_num_seqs}
        for name, value in limits.items():
            if value is not None:
                self.set_limit(name, value)

    def set_limit(self, name: str, value: object) -> None:
        """Set ``max_num_batched_tokens`` or ``max_num_seqs`` (a positive integer, else a ``ValueError``)."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        setattr(self, name, value)

    @property
    def num_pending(self) -> int:
        """Prompts queued and not yet scheduled."""
        return sum(len(job.pending) for job in self.jobs)

    @property
    def pending_tokens(self) -> int:
        """Tokens of the prompts queued and not yet scheduled."""
        return sum(-sum(job._neg_lengths) for job in self.jobs)

    def add(self, job: Job) -> None:
        if job.pending:
            self.jobs.append(job)

    def remove(self, job: Job) -> int:
        """Drop ``job``'s pending prompts; returns how many there were."""
        n = len(job.pending)
        job.take(0, n)
        try:
            self.jobs.remove(job)
        except ValueError:
            pass
        return n

    def has_work(self) -> bool:
        self._prune()
        return bool(self.jobs)

    def _prune(self) -> None:
        while self.jobs and (not self.jobs[0].pending or self.jobs[0].done):
            self.jobs.popleft()

    def _fits(
        self,
        n: int,
        max_len: int,
        total: int,
        length: int,
        budget: int | None = None,
        seats: int | None = None,
    ) -> bool:
        """Whether a prompt of ``length`` tokens may join a batch of ``n`` prompts (at most
        ``seats`` of them, default ``max_num_seqs``)."""
        budget = self.max_num_batched_tokens if budget is None else budget
        if n >= (self.max_num_seqs if seats is None else seats):
            return False
        new_max = max(max_len, length)
        if self._cost(n + 1, new_max, total + length) > budget:
            return False
        added = new_max * (n + 1) - max_len * n  # padded tokens this prompt adds
        return self.packed or added <= length + self.batch_overhead_tokens

    def _fits_whole(self, n: int, state: list[int], lengths: list[int]) -> bool:
        """Whether prompts of ``lengths`` may all join a batch of ``n`` prompts (``state``: its
        max_len, total tokens) within ``max_num_seqs`` and the token budget."""
        n_all = n + len(lengths)
        cost = self._cost(n_all, max(state[0], *lengths), state[1] + sum(lengths))
        return n_all <= self.max_num_seqs and cost <= self.max_num_batched_tokens

    def _cost(self, n: int, max_len: int, total: int) -> int:
        """What a batch of ``n`` prompts (``total`` tokens, the longest ``max_len``) costs against
        the token budget: its tokens when packed, ``max_len x n`` padded."""
        return total if self.packed else max_len * n

    def _needs_several(self, job: Job) -> bool:
        """Whether ``job``'s pending prompts may need more than one batch (an upper bound)."""
        cost_of_longest = job.length(0) * len(job.pending)
        return cost_of_longest > self.max_num_batched_tokens or len(job.pending) > self.max_num_seqs

    def _riders(self, anchor: Job) -> tuple[list[Job], int]:
        """Small waiting jobs that ride along with a job needing more than one batch, and the
        budget they take (in padded tokens when not packed): at most a quarter of it."""
        if not self._needs_several(anchor):
            return [], 0
        room, seats = self.max_num_batched_tokens // 4, self.max_num_seqs // 4
        riders: list[Job] = []
        for job in itertools.islice(self.jobs, 1, 1 + self.scan_jobs):
            if job.key != anchor.key or not job.pending or job.done or len(job.pending) > seats:
                continue
            lengths = [job.length(k) for k in range(len(job.pending))]
            cost = self._cost(len(lengths), anchor.length(0), sum(lengths))
            if (self.packed or max(lengths) <= anchor.length(0)) and cost <= room:
                riders.append(job)
                room, seats = room - cost, seats - len(lengths)
        return riders, self.max_num_batched_tokens // 4 - room

    def next_batch(self) -> ScheduledBatch | None:
        """Take the next batch off the queue (``None`` when nothing is pending)."""
        self._prune()
        if not self.jobs:
            return None
        lead = self.jobs[0]
        # tokens of sliced (large server) jobs this batch may still take
        sliced_room: list[int | None] = [lead.slice_tokens]
        if lead.slice_tokens is not None:
            small = self._small_behind(lead)
            lead.yielded = small is not None and not lead.yielded
            if lead.yielded:  # every other batch, small jobs waiting behind it go alone
                lead, sliced_room = small, [0]
        entries: list[tuple[Job, int]] = []
        state = [0, 0]  # max_len, total tokens
        riders, reserved = self._riders(lead)
        seats = self.max_num_seqs - sum(len(job.pending) for job in riders)  # the riders' seats kept
        self._fill(lead, 0, entries, state, self.max_num_batched_tokens - reserved, sliced_room, seats)
        for job in riders:  # whole, within the room kept for them (and the batch's limits)
            lengths = [job.length(k) for k in range(len(job.pending))]
            if not self._fits_whole(len(entries), state, lengths):
                continue
            state[0], state[1] = max(state[0], max(lengths)), state[1] + sum(lengths)
            entries.extend((job, pos) for pos in job.take(0, len(job.pending)))
            job.started = True
        scanned = 0
        for job in list(self.jobs):
            if len(entries) >= self.max_num_seqs or scanned >= self.scan_jobs:
                break
            if job is lead:
                continue
            scanned += 1
            if job.key != lead.key or not job.pending or job.done:
                continue
            # the first prompt not longer than the batch could take without more padding
            slack = self.batch_overhead_tokens // max(len(entries), 1)
            start = 0 if self.packed else job.first_at_most(state[0] + slack)
            self._fill(job, start, entries, state, None, sliced_room)
        self._prune()
        return ScheduledBatch(lead.key, entries, self.max_num_batched_tokens)

    def _small_behind(self, job: Job) -> Job | None:
        """The first waiting job after ``job`` that runs its tasks and is not sliced (small)."""
        for other in itertools.islice(self.jobs, 1, 1 + self.scan_jobs):
            if other.key == job.key and other.pending and not other.done and other.slice_tokens is None:
                return other
        return None

    def _fill(
        self,
        job: Job,
        start: int,
        entries: list[tuple[Job, int]],
        state: list[int],
        budget: int | None = None,
        sliced_room: list[int | None] | None = None,
        seats: int | None = None,
    ) -> None:
        """Take ``job``'s pending prompts from ``start`` on, in order, while they fit ``budget``
        and ``seats`` (and, for a job with ``slice_tokens``, the batch's ``sliced_room``, which
        shrinks)."""
        room = None
        if job.slice_tokens is not None and sliced_room is not None:
            if sliced_room[0] is None:
                sliced_room[0] = job.slice_tokens
            room = sliced_room[0]
        stop, taken = start, 0
        max_len, total = state
        while stop < len(job.pending):
            length = job.length(stop)
            if entries or stop > start:  # the first prompt of a batch always goes
                if room is not None and taken + length > room:
                    break
                if not self._fits(len(entries) + stop - start, max_len, total, length, budget, seats):
                    break
            max_len, total, taken = max(max_len, length), total + length, taken + length
            stop += 1
        state[0], state[1] = max_len, total
        if room is not None:
            sliced_room[0] = max(room - taken, 0)
        entries.extend((job, pos) for pos in job.take(start, stop))
        if stop > start:
            job.started = True


def schedule(requests: list[Request], max_num_batched_tokens: int, max_num_seqs: int) -> list[Batch]:
    """All batches of one job (the policy of :class:`Scheduler` on a single list of requests).

    Args:
        requests: tokenized requests, in any order.
        max_num_batched_tokens: budget of padded tokens per batch (``max_len x n``). A
            request longer than the budget runs alone.
        max_num_seqs: cap on requests per batch.

    Returns:
        Batches whose padded size fits the budget, longest requests first.
    """
    scheduler = Scheduler(max_num_batched_tokens, max_num_seqs)
    scheduler.add(Job(list(requests), {"embed": None}))
    batches = []
    while (scheduled := scheduler.next_batch()) is not None:
        batches.append(scheduled.batch)
    return batches
