"""The engine core with a fake executor: batching across jobs, budget, cancellation, isolation, pipeline."""

from __future__ import annotations

import threading
import time

import pytest
from fakes import FakeExecutor, make_core, reqs
from vllm_pool.engine.core import EngineCore
from vllm_pool.engine.scheduler import Job, JobCancelled, Scheduler

from vllm_pool import PoolingParams


def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def outputs(job, task: str = "embed") -> list:
    return job.future.result(5)[task]


def test_jobs_of_many_callers_share_a_batch():
    core, fake = make_core()
    core.start()
    fake.gate.clear()
    first = core.submit(reqs([1]), {"embed": None})
    wait_until(lambda: fake.started == 1)  # the first batch is running (held)
    others = [core.submit(reqs([10 * k, 10 * k + 1]), {"embed": None}) for k in range(2, 6)]
    assert core.num_pending == 8
    fake.gate.set()
    assert outputs(first) == [("embed", 1)]
    assert [outputs(j) for j in others] == [[("embed", 10 * k), ("embed", 10 * k + 1)] for k in range(2, 6)]
    assert fake.batches == [(("embed",), [1]), (("embed",), [20, 21, 30, 31, 40, 41, 50, 51])]
    core.close()


def test_padded_budget_similar_lengths_and_task_grouping():
    core, fake = make_core(budget=12, seqs=2)
    core.start()
    fake.gate.clear()
    blocker = core.submit(reqs([0]), {"embed": None})
    wait_until(lambda: fake.started == 1)
    jobs = [
        core.submit(reqs([1, 2, 3], length=4), {"embed": None}),
        core.submit(reqs([7], length=4), {"classify": None}),
        core.submit(reqs([4], length=20), {"embed": None}),  # over budget: alone
        core.submit(reqs([5, 6], length=6), {"embed": None}),
    ]
    fake.gate.set()
    for job in [blocker, *jobs]:
        job.future.result(5)
    assert [ids for _, ids in fake.batches] == [
        [0],
        [1, 2],  # the oldest job first, longest first; size cap 2
        [3, 5],  # the closest length that fits: 6 x 2 = 12
        [7],  # one task set per batch
        [4],  # 20 tokens: over the budget with anything else
        [6],
    ]
    assert fake.batches[3][0] == ("classify",)
    core.close()


def test_padding_is_not_paid_for_far_lengths():
    """A 4-token prompt does not join a 100-token batch (it would add 100 padded tokens)."""
    core, fake = make_core(budget=1000, seqs=64)
    long_job = core.submit(reqs([1], length=100), {"embed": None})
    short_job = core.submit(reqs([2], length=4), {"embed": None})
    core.wait([long_job, short_job])
    assert [ids for _, ids in fake.batches] == [[1], [2]]


def test_cancelled_job_is_dropped_before_it_runs():
    core, fake = make_core()
    dropped: list[int] = []
    core.on_drop = lambda job, n: dropped.append(n)
    core.start()
    fake.gate.clear()
    blocker = core.submit(reqs([1]), {"embed": None})
    wait_until(lambda: fake.started == 1)
    victim = core.submit(reqs([2, 3]), {"embed": None})
    kept = core.submit(reqs([4]), {"embed": None})
    core.cancel(victim)
    fake.gate.set()
    with pytest.raises(JobCancelled):
        victim.future.result(5)
    assert outputs(blocker) == [("embed", 1)]
    assert outputs(kept) == [("embed", 4)]
    assert [ids for _, ids in fake.batches] == [[1], [4]]
    assert dropped == [2]
    core.close()


def test_an_input_failing_in_the_model_fails_its_own_job_only():
    core, fake = make_core()
    fake.bad = {666}
    good_a = core.submit(reqs([1, 2]), {"embed": None})
    bad = core.submit(reqs([3, 666]), {"embed": None})
    good_b = core.submit(reqs([4]), {"embed": None})
    with pytest.raises(RuntimeError, match="bad input"):
        core.wait([good_a, bad, good_b])
    assert outputs(good_a) == [("embed", 1), ("embed", 2)]
    assert outputs(good_b) == [("embed", 4)]
    with pytest.raises(RuntimeError, match=r"bad input \[666\]"):
        bad.future.result(0)
    # one batch of all three jobs, then each job alone
    assert [ids for _, ids in fake.batches] == [[1, 2, 3, 666, 4], [1, 2], [3, 666], [4]]
    # and the core keeps working
    assert core.run(reqs([5]), {"embed": None}) == {"embed": [("embed", 5)]}


def test_several_tasks_from_one_batch_and_per_job_params():
    core, fake = make_core()
    p = PoolingParams(dimensions=2)
    job = core.submit(reqs([1, 2]), {"embed": [p, p], "token_embed": None})
    core.wait([job])
    assert job.future.result()["token_embed"] == [("token_embed", 1), ("token_embed", 2)]
    assert fake.batches == [(("embed", "token_embed"), [1, 2])]


@pytest.mark.parametrize("output_thread", [False, True])
def test_next_batch_is_staged_before_the_last_outputs_are_copied_back(output_thread):
    """The pipeline (output thread, as on CUDA): execute N, then stage N + 1 (host work while the
    device runs N), then copy N back. Without one (the CPU, where N has run when ``execute``
    returns) N's jobs are answered first, so that their clients' next requests can join N + 1."""
    core, fake = make_core(budget=8, seqs=64, output_thread=output_thread)
    job = core.submit(reqs([1, 2, 3], length=8), {"embed": None})  # 8 x 1 tokens per batch: 3 batches
    assert core.run(reqs([9], length=1), {"embed": None})  # a separate job, same loop
    job.future.result(5)
    events = [e for e in fake.events if e[1] != 9]
    if output_thread:
        assert events == [
            ("stage", 1), ("execute", 1), ("stage", 2), ("to_host", 1),
            ("execute", 2), ("stage", 3), ("to_host", 2), ("execute", 3), ("to_host", 3),
        ]  # fmt: skip
    else:
        assert events == [
            ("stage", 1), ("execute", 1), ("to_host", 1), ("stage", 2),
            ("execute", 2), ("to_host", 2), ("stage", 3), ("execute", 3), ("to_host", 3),
        ]  # fmt: skip
    core.close()


def test_offline_callers_in_threads_share_the_loop():
    core, fake = make_core()
    results: dict[int, dict] = {}

    def call(k: int) -> None:
        results[k] = core.run(reqs([10 * k + i for i in range(5)]), {"embed": None})

    threads = [threading.Thread(target=call, args=(k,)) for k in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {k: {"embed": [("embed", 10 * k + i) for i in range(5)]} for k in range(1, 7)}
    ran = sorted(i for _, ids in fake.batches for i in ids)
    assert ran == sorted(10 * k + i for k in range(1, 7) for i in range(5))


def test_interrupted_caller_cancels_its_jobs_and_requeues_nothing_twice():
    core, fake = make_core(budget=4, seqs=1)
    calls = 0
    real = fake.execute

    def interrupting(staged, scheduled):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return real(staged, scheduled)

    fake.execute = interrupting
    job = core.submit(reqs([1, 2, 3]), {"embed": None})
    with pytest.raises(KeyboardInterrupt):
        core.wait([job])
    with pytest.raises(JobCancelled):
        job.future.result(0)
    assert core.num_pending == 0
    assert core.run(reqs([7]), {"embed": None}) == {"embed": [("embed", 7)]}


def test_empty_job_and_bad_budget():
    core, _ = make_core()
    assert core.run([], {"embed": None}) == {"embed": []}
    with pytest.raises(ValueError, match="positive"):
        Scheduler(0, 1)


def test_outputs_gathered_into_one_transfer_and_split_back():
    """The CUDA output path's logic (one flat copy per task, split by shape), run on the CPU."""
    import torch
    from vllm_pool.engine.executor import gather_to_host, split_flat

    outputs = {
        "embed": [torch.randn(8), torch.randn(8).to(torch.bfloat16)],
        "token_embed": [torch.randn(3, 4), torch.randn(1, 4), torch.randn(5, 4)],
        "classify": [],
    }
    flat = gather_to_host(outputs, pinned=False)
    assert {t: h.shape for t, (h, _) in flat.items()} == {
        "embed": (16,), "token_embed": (36,), "classify": (0,)
    }  # fmt: skip
    for task, (host, shapes) in flat.items():
        back = split_flat(host, shapes)
        assert len(back) == len(outputs[task])
        for got, want in zip(back, outputs[task]):
            assert got.dtype == torch.float32 and got.shape == want.shape
            assert torch.equal(got, want.float())


@pytest.mark.parametrize("packed", [False, True])
def test_small_jobs_ride_along_with_a_job_that_needs_several_batches(packed):
    """Head of line: behind a job of several batches, a one-prompt job joins its next batch
    (within a quarter of the budget) instead of waiting for all of it; a job that fits one
    batch keeps the whole budget, and a waiting job too large to ride waits its turn."""
    fake = FakeExecutor()
    core = EngineCore(fake, Scheduler(64, 64, packed=packed))  # 16 prompts of 4 tokens per batch
    large = core.submit(reqs(list(range(100, 140))), {"embed": None})  # 40 prompts: 3 batches
    small = core.submit(reqs([7]), {"embed": None})
    too_big = core.submit(reqs(list(range(200, 205))), {"embed": None})  # 20 tokens > a quarter
    core.wait([large, small, too_big])
    batches = [ids for _, ids in fake.batches]
    assert batches[0] == [*range(100, 115), 7]  # the large job's prompts + the rider, in budget
    assert sorted(i for b in batches for i in b) == sorted([*range(100, 140), 7, *range(200, 205)])
    assert all(len(b) * 4 <= 64 for b in batches)  # the budget holds, riders included
    assert outputs(small) == [("embed", 7)] and outputs(large) == [("embed", i) for i in range(100, 140)]
    assert not any(200 in b for b in batches[:2])  # the larger waiting job rode along with nothing

    fake2 = FakeExecutor()
    core2 = EngineCore(fake2, Scheduler(64, 64, packed=packed))
    fits = core2.submit(reqs(list(range(100, 116))), {"embed": None})  # exactly one batch
    small2 = core2.submit(reqs([7]), {"embed": None})
    core2.wait([fits, small2])
    assert [ids for _, ids in fake2.batches] == [list(range(100, 116)), [7]]


@pytest.mark.parametrize("packed", [False, True])
def test_a_sliced_job_keeps_its_batches_short(packed):
    """Large server jobs (``slice_tokens``) put at most that many tokens in a batch between
    them (a second large job does not fill the batch up), and a small job waiting behind one
    goes alone in the next batch; then the slices go on (every other batch, when small jobs
    keep coming)."""
    fake = FakeExecutor()
    core = EngineCore(fake, Scheduler(64, 64, packed=packed))  # 16 prompts of 4 tokens per batch
    large = core.submit(reqs(list(range(100, 140))), {"embed": None}, slice_tokens=16)
    large2 = core.submit(reqs(list(range(300, 340))), {"embed": None}, slice_tokens=16)
    small = core.submit(reqs([7]), {"embed": None})
    core.wait([large, large2, small])
    batches = [ids for _, ids in fake.batches]
    assert batches[0] == [7]  # the small job first, alone
    assert batches[1:12] == [list(range(i, i + 4)) for i in range(100, 140, 4)] + [[300, 301, 302, 303]]
    assert all(len(b) <= 4 for b in batches) and sum(map(len, batches)) == 81
    assert outputs(large) == [("embed", i) for i in range(100, 140)]
    assert outputs(large2) == [("embed", i) for i in range(300, 340)] and outputs(small) == [("embed", 7)]


@pytest.mark.parametrize("gather", [True, False])
def test_server_driver_gathers_returning_clients_into_one_batch(gather):
    """After a batch that answered several jobs, the background driver waits for their clients'
    next requests (arriving one by one), counting the one that arrived while the batch ran,
    instead of running them as they come (``max_gather_s=0``)."""
    core, fake = make_core()
    core.gather_gap_s, core.max_gather_s, core.gather_fraction = 1.0, 5.0 if gather else 0.0, 1000.0
    fake.gate.clear()
    core.start()
    try:
        first = core.submit(reqs([1]), {"embed": None})
        wait_until(lambda: fake.started == 1)  # [1] is running alone
        crowd = [core.submit(reqs([i]), {"embed": None}) for i in (2, 3, 4)]
        fake.delay = 0.3  # seconds per batch from here on
        fake.gate.set()
        wait_until(lambda: fake.started == 2)  # [2, 3, 4] is running
        late = core.submit(reqs([5]), {"embed": None})  # arrives while it runs
        for job in [first, *crowd]:
            job.future.result(5)
        back = []
        for i in (6, 7, 8):  # the three clients come back, 50 ms apart
            back.append(core.submit(reqs([i]), {"embed": None}))
            time.sleep(0.05)
        for job in [late, *back]:
            job.future.result(10)
    finally:
        core.close()
    batches = [ids for _, ids in fake.batches]
    assert batches[:2] == [[1], [2, 3, 4]]
    # without gathering, [5] runs at once and the others queue behind it
    assert batches[2:] == ([[5, 6, 7, 8]] if gather else [[5], [6, 7, 8]])


def test_small_jobs_get_every_other_batch_beside_a_sliced_job():
    """While small jobs keep arriving behind a large server job, batches alternate: the small
    ones alone, then a slice of the large one (which is never starved)."""
    scheduler = Scheduler(64, 64, packed=True)
    large = Job(reqs(list(range(100, 140))), {"embed": None}, slice_tokens=16)
    scheduler.add(large)
    order = []
    for small_id in (1, 2, 3):
        scheduler.add(Job(reqs([small_id]), {"embed": None}))
        for _ in range(2):
            order.append([r.prompt_token_ids[0] for r in scheduler.next_batch().batch.requests])
    assert order == [[1], [100, 101, 102, 103], [2], [104, 105, 106, 107], [3], [108, 109, 110, 111]]
