"""Where a CPU model's torch work runs: one OpenMP team for the engine, whoever calls it.

GNU OpenMP (the runtime of torch's Linux wheels) keeps a team of worker threads for every
thread that has run a parallel region, until that thread exits. Once the teams hold more
threads than there are cores, no waiting worker spins any more: each of a forward pass's few
hundred parallel regions then wakes its workers from sleep (a futex wake, 50-100 us, as long
as a small GEMM). An engine loaded on the main thread and driven from others (the server's
engine thread, the executor threads of LangChain's and LlamaIndex's async methods) paid
that: one short query took 11.6 ms through ``aembed_query`` against 5.2 ms through
``embed_query`` (MiniLM, 2 cores).

So on the CPU:

- the model loads in a passing thread (:func:`in_passing_thread`), whose team ends with it;
- calls made on the main thread run there, as before: a script's or notebook's own torch work
  (a Sentence Transformers reranker, a MaxSim over token vectors) shares that one team;
- calls from any other thread go to the process's one :class:`ModelThread`
  (:func:`shared`), which every CPU engine uses: a server or an async application, whose
  main thread runs the event loop, has that thread's team only. Batches of two engines (an
  embedder and a reranker) then run one after the other instead of fighting over the cores.

The hop costs a thread hand-off per batch (tens of microseconds); the model thread runs each
call with the caller's torch thread count (``torch.set_num_threads`` is per thread under
OpenMP). A process that mixes both (main-thread calls and calls from other threads) has two
teams, as before. On CUDA the engine runs in the calling threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class ModelThread:
    """A long-lived worker thread for the calls of every thread but the main one.

    Args:
        name: the worker thread's name prefix.
    """

    def __init__(self, name: str = "vllm-pool-model") -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._ident: int | None = None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``: inline on the main thread and on the model thread itself, else on the
        model thread (its result, or its exception re-raised in the caller)."""
        if threading.current_thread() is threading.main_thread() or threading.get_ident() == self._ident:
            return fn(*args)
        return self._pool.submit(self._call, torch.get_num_threads(), fn, args).result()

    def _call(self, threads: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._ident = threading.get_ident()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return fn(*args)

    def close(self) -> None:
        """Let the worker thread end once idle (its OpenMP team ends with it)."""
        self._pool.shutdown(wait=False)


def on_thread(thread: ModelThread | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` through ``thread``, or in the calling thread when there is none (CUDA)."""
    return fn(*args) if thread is None else thread.run(fn, *args)


def in_passing_thread(fn: Callable[[], T]) -> T:
    """``fn()`` run in a thread that ends with it: its result, or its exception re-raised.

    Loading a model runs parallel regions (weight copies, the prepacking checks); in a
    passing thread the OpenMP team they start ends with the thread instead of staying with
    the caller next to the team of the thread that will run the model.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="vllm-pool-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


_shared: ModelThread | None = None
_shared_lock = threading.Lock()


def shared() -> ModelThread:
    """The process's model thread (every CPU engine's), started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ModelThread()
        return _shared


def _forget_shared() -> None:
    """In a forked child the parent's thread does not exist: start a new one when needed."""
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_shared)
