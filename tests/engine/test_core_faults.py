"""Faults around the engine core's callers: an interrupted driver, progress callbacks that
raise, an interrupted multi-chunk call, and an engine used in a forked child."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from fakes import make_core, reqs
from vllm_pool.engine.model_thread import in_passing_thread as from_other_thread


def _in_thread(fn):
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=fn()), daemon=True)
    thread.start()
    return thread, box


def test_a_waiter_drives_work_that_an_interrupted_driver_gave_back():
    """Caller B's prompt rides in caller A's batch; A is interrupted (Ctrl-C) while it runs.
    The batch goes back to the queue and B, already past "all my prompts are scheduled",
    must drive it instead of waiting forever on its future."""
    core, fake = make_core()
    run = fake.execute
    calls = []

    def execute(staged, scheduled):
        calls.append(1)
        if len(calls) == 1:
            run(staged, scheduled)  # held at the gate until B waits
            raise KeyboardInterrupt
        return run(staged, scheduled)

    fake.execute = execute
    fake.gate.clear()
    job_a, job_b = core.submit(reqs([1]), {"embed": None}), core.submit(reqs([2]), {"embed": None})
    driver, _ = _in_thread(lambda: pytest.raises(KeyboardInterrupt, core.wait, [job_a]))
    while fake.started < 1:
        time.sleep(0.002)
    assert not job_b.pending  # B's prompt is in A's running batch
    waiter, box = _in_thread(lambda: core.wait([job_b]))
    time.sleep(0.2)  # B is waiting on its batch
    fake.gate.set()
    driver.join(5)
    waiter.join(5)
    assert not waiter.is_alive(), "the waiter hangs on its future"
    assert box["result"] == [{"embed": [("embed", 2)]}]
    assert job_a.done and core.num_pending == 0


@pytest.mark.parametrize("output_thread", [False, True])
def test_a_progress_callback_that_raises_fails_its_own_job_only(output_thread):
    core, fake = make_core(output_thread=output_thread)

    def broken(n):
        raise RuntimeError("B's progress bar broke")

    job_a = core.submit(reqs([1, 2, 3, 4]), {"embed": None})
    job_b = core.submit(reqs([5]), {"embed": None}, on_batch=broken)
    waiter, box = _in_thread(lambda: core.wait([job_a]))  # A drives, B's callback runs in its thread
    waiter.join(5)
    assert not waiter.is_alive()
    assert box["result"] == [{"embed": [("embed", i) for i in (1, 2, 3, 4)]}]
    assert fake.batches[0][1] == [1, 2, 3, 4, 5]  # one batch: B rode with A
    with pytest.raises(RuntimeError, match="B's progress bar broke"):
        job_b.future.result(5)
    again = core.submit(reqs([7]), {"embed": None})
    assert core.wait([again]) == [{"embed": [("embed", 7)]}]  # still usable


def test_an_interrupted_large_call_leaves_nothing_queued(tiny_bert):
    """Ctrl-C while the next chunk is being tokenized: that chunk is not left in the queue
    for later calls to run."""
    from vllm_pool import LLM

    llm = LLM(str(tiny_bert), max_num_batched_tokens=256, max_num_seqs=8)
    llm.tokenize_chunk = 20
    texts = [f"the cat number {i} and the dog " * 3 for i in range(100)]
    tokenize = llm.input_processor.__call__
    tokenizing = threading.Event()

    class SlowTokenizer:
        def __call__(self, *args, **kwargs):
            tokenizing.set()
            time.sleep(0.3)
            return tokenize(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(llm.input_processor_real, name)

    class Interrupt:
        def __init__(self, **_):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt  # "Ctrl-C" once the first batch is in

    llm.input_processor_real = llm.input_processor
    llm.input_processor = SlowTokenizer()
    try:
        with pytest.raises(KeyboardInterrupt):
            llm.embed(texts, use_tqdm=Interrupt)
        time.sleep(0.8)  # the tokenizer thread finishes the chunk it was on
        assert llm.core.num_pending == 0
    finally:
        llm.input_processor = llm.input_processor_real
    (out,) = llm.embed(["hello"], use_tqdm=False)
    assert len(out.outputs.embedding) > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_engine_made_before_a_fork_runs_in_the_child(tiny_bert):
    from vllm_pool import LLM

    llm = LLM(str(tiny_bert), device="cpu")
    expected = from_other_thread(lambda: llm.embed(["a b c"], use_tqdm=False))[0].outputs.embedding
    pid = os.fork()
    if pid == 0:  # the child: the parent's model and tokenizer threads do not exist here
        signal.alarm(30)  # a hang fails the test instead of blocking it
        got = from_other_thread(lambda: llm.embed(["a b c"], use_tqdm=False))[0].outputs.embedding
        again = llm.embed(["a b c"], use_tqdm=False)[0].outputs.embedding
        ok = max(abs(x - y) for x, y in zip(got + again, expected + expected)) < 1e-5
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_batch_given_back_keeps_its_jobs_in_order():
    core, fake = make_core()
    run, calls = fake.execute, []

    def execute(staged, scheduled):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return run(staged, scheduled)

    fake.execute = execute
    jobs = [core.submit(reqs([k]), {"embed": None}) for k in (1, 2, 3)]
    with pytest.raises(KeyboardInterrupt):
        core._drive_until(lambda: False)  # a driver interrupted in its first batch
    assert [j for j in core.scheduler.jobs] == jobs  # back in the queue, oldest first
    assert not any(j.done for j in jobs)
    assert core.wait(jobs) == [{"embed": [("embed", k)]} for k in (1, 2, 3)]
    assert fake.batches[-1][1] == [1, 2, 3]
