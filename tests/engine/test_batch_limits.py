"""No forward pass holds more than ``max_num_seqs`` prompts, riders (small jobs that join a large
job's batch) included; the token budget holds as before."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.scheduler import Job, Scheduler
from vllm_pool.engine.types import Request


def _reqs(lengths: list[int]) -> list[Request]:
    return [Request(index=i, prompt_token_ids=[1] * n, params=PoolingParams()) for i, n in enumerate(lengths)]


def _drain(scheduler: Scheduler) -> list[list[tuple[Job, int]]]:
    batches = []
    while (b := scheduler.next_batch()) is not None:
        batches.append(b.entries)
    return batches


def _cost(entries: list[tuple[Job, int]], packed: bool) -> int:
    lengths = [job.requests[pos].num_tokens for job, pos in entries]
    return sum(lengths) if packed else max(lengths) * len(lengths)


@pytest.mark.parametrize("packed", [False, True])
def test_riders_take_seats_off_the_lead(packed: bool) -> None:
    s = Scheduler(max_num_batched_tokens=2048, max_num_seqs=8, packed=packed)
    big, small = Job(_reqs([5] * 20), {"embed": None}), Job(_reqs([5] * 2), {"embed": None})
    s.add(big)
    s.add(small)
    batches = _drain(s)
    assert [len(b) for b in batches] == [8, 8, 6]
    assert sum(job is small for job, _ in batches[0]) == 2  # the small job still rides along first
    assert sorted(p for b in batches for j, p in b if j is big) == list(range(20))


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("budget, seqs", [(64, 8), (256, 4), (2048, 8), (100, 5), (1000, 100)])
def test_random_queues_keep_both_limits(packed: bool, budget: int, seqs: int) -> None:
    rng = random.Random(budget * seqs + packed)
    s = Scheduler(budget, seqs, packed=packed)
    jobs = []
    for k in range(40):
        n = rng.choice([1, 2, 3, 30, 60]) if k % 3 else rng.randint(1, 200)
        job = Job(_reqs([rng.randint(1, 40) for _ in range(n)]), {"embed": None})
        job.slice_tokens = rng.choice([None, None, budget // 2])
        jobs.append(job)
        s.add(job)
    batches = _drain(s)
    for b in batches:
        assert len(b) <= seqs
        assert _cost(b, packed) <= budget or len(b) == 1
    for job in jobs:  # every prompt exactly once
        assert sorted(p for b in batches for j, p in b if j is job) == list(range(len(job.requests)))


def test_long_first_prompt_runs_alone_without_riders() -> None:
    """A lead prompt over the budget runs alone (packed): riders wait for the next batch."""
    s = Scheduler(100, 8, packed=True)
    s.add(Job(_reqs([150, 150, 150]), {"embed": None}))
    s.add(Job(_reqs([5]), {"embed": None}))
    first = s.next_batch()
    assert [j.requests[p].num_tokens for j, p in first.entries] == [150]


@pytest.fixture
def seqs8(default_llm):
    llm = default_llm
    old = llm.max_num_seqs
    llm.max_num_seqs = 8
    sizes: list[int] = []
    llm.core.on_batch = lambda stats: sizes.append(stats.num_prompts)
    try:
        yield llm, sizes
    finally:
        llm.core.on_batch = None
        llm.max_num_seqs = old


def _close_to_st(outputs, texts, st_model) -> None:
    want = st_model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    got = np.array([o.outputs.data.float().numpy() for o in outputs])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_llm_jobs_queued_behind_a_large_one(seqs8, st_model) -> None:
    llm, sizes = seqs8
    big_texts = [f"sentence number {i} about cats" for i in range(20)]
    small_texts = ["star", "a"]
    big = llm.core.submit(llm.make_requests(big_texts, "embed"), {"embed": None})
    small = llm.core.submit(llm.make_requests(small_texts, "embed"), {"embed": None})
    llm.core.wait([big, small])
    assert sizes and max(sizes) <= 8 and sum(sizes) == 22
    from vllm_pool.engine.task_io import encode_processor

    io = encode_processor(llm, "embed")
    for job, texts in ((big, big_texts), (small, small_texts)):
        _close_to_st(io.finish(job.requests, job.future.result()["embed"]), texts, st_model)


def test_llm_concurrent_callers(seqs8, st_model) -> None:
    llm, sizes = seqs8
    calls = [
        [f"caller {c} text {i} " + "word " * (i % 7) for i in range(n)]
        for c, n in enumerate([41, 1, 2, 9, 1, 2])
    ]
    results: dict[int, list] = {}

    def call(c: int) -> None:
        results[c] = llm.embed(calls[c], use_tqdm=False)

    threads = [threading.Thread(target=call, args=(c,)) for c in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(sizes) <= 8 and sum(sizes) == sum(map(len, calls))
    for c, texts in enumerate(calls):
        _close_to_st(results[c], texts, st_model)
