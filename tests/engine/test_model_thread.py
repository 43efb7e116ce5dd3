"""Where a CPU model's torch work runs (`engine.model_thread`): it loads in a passing thread,
the main thread's calls run there, every other thread's calls on the one model thread; so
the model has one OpenMP team whoever calls it. A main-thread call releases its thread's
team once the model thread has run (or after a long call), so a process that calls from both
keeps one team."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from vllm_pool.engine import model_thread
from vllm_pool.engine.model_thread import ModelThread, in_passing_thread, on_thread, release_team

from vllm_pool import LLM

MAIN = threading.main_thread


def from_other_thread(fn):
    """``fn()`` called from a thread that is not the main one (pytest runs tests on the main)."""
    return in_passing_thread(fn)


def test_other_threads_calls_run_on_one_thread_and_the_main_threads_inline():
    worker = ModelThread()
    try:
        first = from_other_thread(lambda: worker.run(threading.get_ident))
        second = from_other_thread(lambda: worker.run(threading.get_ident))
        assert first == second != threading.get_ident()
        assert worker.run(threading.get_ident) == threading.get_ident()  # the main thread: inline
        assert from_other_thread(lambda: worker.run(lambda x, y: x + y, 2, 3)) == 5
        # a call made on the model thread runs inline (no wait on itself)
        assert from_other_thread(lambda: worker.run(lambda: worker.run(threading.get_ident))) == first
        assert on_thread(None, threading.get_ident) == threading.get_ident()
    finally:
        worker.close()


def test_model_thread_reraises_and_stays_usable():
    worker = ModelThread()
    error = ValueError("bad batch")

    def fail():
        raise error

    try:
        with pytest.raises(ValueError) as info:
            from_other_thread(lambda: worker.run(fail))
        assert info.value is error
        assert from_other_thread(lambda: worker.run(lambda: 7)) == 7
    finally:
        worker.close()


def test_model_thread_uses_the_callers_torch_thread_count():
    before = torch.get_num_threads()
    worker = ModelThread()
    try:
        for n in (1, 2):

            def call(n=n):
                torch.set_num_threads(n)
                return worker.run(torch.get_num_threads)

            assert from_other_thread(call) == n
    finally:
        torch.set_num_threads(before)
        worker.close()


def test_in_passing_thread_returns_reraises_and_ends_its_thread():
    seen = []
    assert in_passing_thread(lambda: seen.append(threading.current_thread()) or 3) == 3
    assert seen[0] is not MAIN() and not seen[0].is_alive()
    error = OSError("no such model")

    def fail():
        raise error

    with pytest.raises(OSError) as info:
        in_passing_thread(fail)
    assert info.value is error


def test_cpu_llm_loads_in_a_passing_thread_and_runs_where_called(tiny_bert, monkeypatch):
    from vllm_pool.engine import llm as llm_module

    where: dict[str, list[threading.Thread]] = {"load": [], "forward": []}
    load = llm_module.load_model

    def recording_load(args):
        where["load"].append(threading.current_thread())
        return load(args)

    monkeypatch.setattr(llm_module, "load_model", recording_load)
    llm = LLM(str(tiny_bert), device="cpu")
    assert llm.model_thread is model_thread.shared()
    assert where["load"][0] is not MAIN() and not where["load"][0].is_alive()
    forward = llm.runner.forward_split

    def recording_forward(staged):
        where["forward"].append(threading.current_thread())
        yield from forward(staged)

    monkeypatch.setattr(llm.runner, "forward_split", recording_forward)
    texts = ["a short text", "another one"]
    expected = llm.embed(texts, use_tqdm=False)
    assert where["forward"] == [MAIN()]
    got = from_other_thread(lambda: llm.embed(texts, use_tqdm=False))
    got_too = from_other_thread(lambda: llm.embed(["from a thread"], use_tqdm=False))
    model = from_other_thread(lambda: llm.model_thread.run(threading.current_thread))
    assert where["forward"][1:] == [model, model] and model is not MAIN()
    assert [o.outputs.embedding for o in got] == [o.outputs.embedding for o in expected]
    assert len(got_too) == 1


def test_cpu_engines_share_the_process_model_thread(tiny_bert, tiny_xlmr):
    first, second = LLM(str(tiny_bert), device="cpu"), LLM(str(tiny_xlmr), device="cpu")
    assert first.model_thread is second.model_thread is model_thread.shared()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_model_thread():
    from_other_thread(lambda: model_thread.shared().run(int))  # the parent's thread is running
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread does not exist here
        signal.alarm(20)  # a hang fails the test instead of blocking it
        ok = from_other_thread(lambda: model_thread.shared().run(lambda: 41)) + 1 == 42
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def settled_thread_count() -> int:
    """This process's threads, once the count has held for 0.3 s (at most 10 s)."""
    last, stable, deadline = -1, 0, time.monotonic() + 10
    while stable < 3 and time.monotonic() < deadline:
        count = len(os.listdir("/proc/self/task"))
        stable, last = (stable + 1, count) if count == last else (0, count)
        time.sleep(0.1)
    return last


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_calling_threads_start_no_openmp_team_of_their_own(tiny_bert):
    """With two torch threads a thread that ran a forward pass itself would keep one OpenMP
    worker for as long as it lives; callers of a CPU ``LLM`` from other threads keep none."""
    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        llm = LLM(str(tiny_bert), device="cpu")
        texts = [f"text number {i} " * 20 for i in range(64)]  # enough work for parallel regions
        from_other_thread(lambda: llm.embed(texts, use_tqdm=False))  # the model thread's team
        release, ran = threading.Event(), threading.Event()

        def caller():
            llm.embed(texts, use_tqdm=False)
            ran.set()
            release.wait(10)  # alive: an OpenMP team of its own would still exist

        count = settled_thread_count()  # threads of earlier tests have ended
        thread = threading.Thread(target=caller)
        thread.start()
        try:
            assert ran.wait(60)
            assert settled_thread_count() == count + 1  # the caller itself only
        finally:
            release.set()
            thread.join()
    finally:
        torch.set_num_threads(before_threads)


def test_main_thread_calls_release_the_team_once_the_model_thread_has_run(monkeypatch):
    released: list[int] = []
    monkeypatch.setattr(model_thread, "release_team", lambda: released.append(threading.get_ident()))
    worker = ModelThread()
    try:
        assert worker.call(lambda: worker.call(lambda: worker.run(lambda: 5))) == 5  # nested, short
        assert released == []  # a short call of a process that never called from elsewhere
        monkeypatch.setattr(model_thread, "RELEASE_AFTER_S", 0.01)
        assert worker.run(lambda: worker.run(time.sleep, 0.02)) is None
        assert released == [threading.get_ident()]  # a long call: once, by the outermost
        monkeypatch.setattr(model_thread, "RELEASE_AFTER_S", 60.0)
        from_other_thread(lambda: worker.run(int))  # the model thread has run
        assert worker.call(int) == 0 and len(released) == 2
        assert from_other_thread(lambda: worker.call(int)) == 0 and len(released) == 2  # not the main
    finally:
        worker.close()


def team_count_change(release) -> int:
    """How many threads the calling thread's OpenMP team had: the process's thread count
    before ``release()`` minus after."""
    before = settled_thread_count()
    release()
    return before - settled_thread_count()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_release_team_ends_the_calling_threads_workers():
    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(300, 384)
        torch.nn.functional.normalize(x, dim=-1)  # a parallel region: this thread's team
        assert team_count_change(lambda: release_team() or pytest.fail("no omp_pause_resource_all")) == 1
        assert team_count_change(release_team) == 0  # none left
        assert torch.allclose(torch.nn.functional.normalize(x, dim=-1).norm(dim=-1), torch.ones(300))
    finally:
        torch.set_num_threads(before_threads)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_main_thread_keeps_no_team_beside_the_model_threads(tiny_bert):
    """An application's start-up work on the main thread (an index build, a large score) followed
    by calls from other threads: the main thread's team is gone once each call returns."""
    from vllm_pool.retrievers import MultiVectorIndex

    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        llm = LLM(str(tiny_bert), device="cpu")
        texts = [f"text number {i} " * 20 for i in range(64)]
        from_other_thread(lambda: llm.embed(texts, use_tqdm=False))  # the model thread has run
        torch.nn.functional.normalize(torch.randn(300, 384), dim=-1)  # a team on the main thread
        llm.embed(texts, use_tqdm=False)
        assert team_count_change(release_team) == 0
        llm.score(texts[0], texts * 5, use_tqdm=False)  # 320 cosines while shaping the outputs
        assert team_count_change(release_team) == 0
        outputs = llm.encode(texts, pooling_task="token_embed", use_tqdm=False)
        tokens = [o.outputs.data.numpy() for o in outputs]
        index = MultiVectorIndex.from_vectors(tokens)
        hits = index.search(tokens[:3], k=2)
        assert [h[0].id for h in hits] == ["0", "1", "2"]
        assert team_count_change(release_team) == 0
    finally:
        torch.set_num_threads(before_threads)
