"""One thread for all of a CPU model's torch work: loading, staging and forward passes.

GNU OpenMP (the runtime of torch's Linux wheels) keeps a team of worker threads for every
thread that has run a parallel region, until that thread exits. Once the teams hold more
threads than there are cores, no waiting worker spins any more: each of a forward pass's few
hundred parallel regions then wakes its workers from sleep (a futex wake, 50-100 us, as long
as a small GEMM). An engine driven from several threads (the server's engine thread, the
executor threads of LangChain's and LlamaIndex's async methods, a model loaded on the main
thread and run elsewhere) paid that: one short query took 11.6 ms through ``aembed_query``
against 5.2 ms through ``embed_query`` (MiniLM, 2 cores).

On the CPU, every ``LLM`` therefore loads and runs its model on the process's one
:func:`shared` :class:`ModelThread`, whoever calls it: a single OpenMP team for all engines,
whose workers spin between one op and the next, and batches of two engines (an embedder and
a reranker) run one after the other instead of fighting over the cores. The hop costs a
thread hand-off per batch (tens of microseconds). The thread runs each call with the
caller's torch thread count (``torch.set_num_threads`` is per thread under OpenMP). On CUDA
the engine keeps running in the calling threads.

Other torch work on the CPU in the same process (a Sentence Transformers model on the main
thread) makes a second team, and both then wait without spinning; :func:`shared`'s
``run`` takes such work onto the same thread (the benchmarks run their references so).
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
    """A single long-lived worker thread that runs callables and returns their results.

    Args:
        name: the thread's name prefix.
    """

    def __init__(self, name: str = "vllm-pool-model") -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._ident: int | None = None

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model thread (inline when already on it): its result, or its
        exception re-raised in the caller."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        return self._pool.submit(self._call, torch.get_num_threads(), fn, args).result()

    def _call(self, threads: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._ident = threading.get_ident()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return fn(*args)

    def close(self) -> None:
        """Let the thread end once idle (its OpenMP team ends with it)."""
        self._pool.shutdown(wait=False)


def on_thread(thread: ModelThread | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on ``thread``, or in the calling thread when there is none (CUDA)."""
    return fn(*args) if thread is None else thread.run(fn, *args)


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
