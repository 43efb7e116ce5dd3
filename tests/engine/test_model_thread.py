"""On the CPU one thread loads and runs the model, whoever calls (`engine.model_thread`): one
OpenMP team for the engine instead of one per calling thread."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from vllm_pool.engine import model_thread
from vllm_pool.engine.model_thread import ModelThread, on_thread

from vllm_pool import LLM


def test_model_thread_runs_every_call_on_one_thread():
    worker = ModelThread()
    try:
        seen = [worker.run(threading.get_ident)]
        other = threading.Thread(target=lambda: seen.append(worker.run(threading.get_ident)))
        other.start()
        other.join()
        assert seen[0] == seen[1] != threading.get_ident()
        assert worker.run(lambda x, y: x + y, 2, 3) == 5
        # a call made on the model thread runs inline (no wait on itself)
        assert worker.run(lambda: worker.run(threading.get_ident)) == seen[0]
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
            worker.run(fail)
        assert info.value is error
        assert worker.run(lambda: 7) == 7
    finally:
        worker.close()


def test_model_thread_uses_the_callers_torch_thread_count():
    before = torch.get_num_threads()
    worker = ModelThread()
    try:
        torch.set_num_threads(1)
        assert worker.run(torch.get_num_threads) == 1
        torch.set_num_threads(2)
        assert worker.run(torch.get_num_threads) == 2
    finally:
        torch.set_num_threads(before)
        worker.close()


def test_cpu_llm_loads_and_runs_on_its_model_thread(tiny_bert, monkeypatch):
    from vllm_pool.engine import llm as llm_module

    where: dict[str, set[int]] = {"load": set(), "forward": set()}
    load = llm_module.load_model

    def recording_load(args):
        where["load"].add(threading.get_ident())
        return load(args)

    monkeypatch.setattr(llm_module, "load_model", recording_load)
    llm = LLM(str(tiny_bert), device="cpu")
    assert llm.model_thread is not None
    forward = llm.runner.forward_split

    def recording_forward(staged):
        where["forward"].add(threading.get_ident())
        yield from forward(staged)

    monkeypatch.setattr(llm.runner, "forward_split", recording_forward)
    expected = llm.embed(["a short text", "another one"], use_tqdm=False)
    caller = threading.Thread(target=lambda: llm.embed(["from a thread"], use_tqdm=False))
    caller.start()
    caller.join()
    model_ident = llm.model_thread.run(threading.get_ident)
    assert where["load"] == where["forward"] == {model_ident}
    assert model_ident not in (threading.get_ident(), caller.ident)
    again = llm.embed(["a short text", "another one"], use_tqdm=False)
    assert [o.outputs.embedding for o in again] == [o.outputs.embedding for o in expected]


def test_cpu_engines_share_the_process_model_thread(tiny_bert, tiny_xlmr):
    first, second = LLM(str(tiny_bert), device="cpu"), LLM(str(tiny_xlmr), device="cpu")
    assert first.model_thread is second.model_thread is model_thread.shared()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_model_thread():
    model_thread.shared().run(int)  # the parent's thread is running
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread does not exist here
        signal.alarm(20)  # a hang fails the test instead of blocking it
        os._exit(0 if model_thread.shared().run(lambda: 41) + 1 == 42 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_calling_threads_start_no_openmp_team_of_their_own(tiny_bert):
    """With two torch threads a thread that ran a forward pass itself would keep one OpenMP
    worker for as long as it lives; callers of a CPU ``LLM`` keep none."""
    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        llm = LLM(str(tiny_bert), device="cpu")
        texts = [f"text number {i} " * 20 for i in range(64)]  # enough work for parallel regions
        llm.embed(texts, use_tqdm=False)
        release, ran = threading.Event(), threading.Event()

        def caller():
            llm.embed(texts, use_tqdm=False)
            ran.set()
            release.wait(10)  # alive: an OpenMP team of its own would still exist

        count = len(os.listdir("/proc/self/task"))
        thread = threading.Thread(target=caller)
        thread.start()
        try:
            assert ran.wait(60)
            time.sleep(0.1)
            assert len(os.listdir("/proc/self/task")) == count + 1  # the caller itself only
        finally:
            release.set()
            thread.join()
    finally:
        torch.set_num_threads(before_threads)
