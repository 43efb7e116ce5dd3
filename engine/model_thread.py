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
- a process that calls from both (an application that builds its index on the main thread
  at start-up, then answers queries through ``aembed_query`` or a thread pool) would keep two
  teams; so once the model thread has run, or after a main-thread call of at least
  :data:`RELEASE_AFTER_S`, the main thread releases its team when the call returns
  (:func:`release_team`, OpenMP's ``omp_pause_resource_all``). Its next parallel region
  starts a new one (about 2 ms on a 2-core VM), which is why a short call on the main thread
  of a process that never calls from elsewhere keeps it.

The hop costs a thread hand-off per batch (tens of microseconds); the model thread runs each
call with the caller's torch thread count (``torch.set_num_threads`` is per thread under
OpenMP). Torch work of the application's own on a second thread still makes a second team.
On CUDA the engine runs in the calling threads.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from vllm_pool.engine.fork_safe import ForkSafePool

T = TypeVar("T")

logger = logging.getLogger(__name__)

RELEASE_AFTER_S = 0.1
"""A main-thread call at least this long releases the main thread's OpenMP team when it returns
(a start-up index build), so that a model thread used later is the only team."""


class ModelThread:
    """A long-lived worker thread for the calls of every thread but the main one.

    Args:
        name: the worker thread's name prefix.
    """

    def __init__(self, name: str = "vllm-pool-model") -> None:
        self._pool = ForkSafePool(name)  # a forked child starts its own thread
        self._ident: int | None = None  # the model thread, once it has run a call
        self._main_depth = 0  # main-thread calls in progress (nested ones run inline)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``: inline on the main thread (as :meth:`call`) and on the model thread
        itself, else on the model thread (its result, or its exception re-raised in the caller)."""
        if self._pool.forked:
            self._ident = None  # the parent's model thread does not exist here
        if threading.get_ident() == self._ident:
            return fn(*args)
        if threading.current_thread() is not threading.main_thread():
            return self._pool.submit(self._on_model_thread, torch.get_num_threads(), fn, args).result()
        return self.call(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the calling thread, as one engine call (an ``LLM`` method's whole
        work: its batches and the shaping of its outputs).

        On the main thread the outermost such call releases the thread's OpenMP team when it
        returns, if the model thread has run or if the call took :data:`RELEASE_AFTER_S` or more.
        """
        if self._main_depth or threading.current_thread() is not threading.main_thread():
            return fn(*args)
        self._main_depth += 1
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._main_depth -= 1
            if self._ident is not None or time.perf_counter() - start >= RELEASE_AFTER_S:
                release_team()

    def _on_model_thread(self, threads: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._ident = threading.get_ident()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return fn(*args)

    def close(self) -> None:
        """Let the worker thread end once idle (its OpenMP team ends with it)."""
        self._pool.shutdown(wait=False)


def release_team() -> bool:
    """End the calling thread's OpenMP worker team (``omp_pause_resource_all``), if torch's
    OpenMP runtime offers it; its next parallel region starts a new one. Returns whether the
    runtime was found and did it (False inside a parallel region, or without such a runtime)."""
    pause = _pause_function()
    return pause is not None and pause(1) == 0  # 1: omp_pause_soft


_pause: Any = False  # not looked up yet


def _pause_function() -> Any:
    """``omp_pause_resource_all`` of the OpenMP runtime torch ships (GNU ``libgomp`` in its
    Linux wheels, LLVM ``libomp`` on macOS), taken from torch's folders and only if the process
    has already loaded it (never a second runtime); None without one."""
    global _pause
    if _pause is False:
        _pause = None
        no_load = getattr(os, "RTLD_NOLOAD", None)
        base = os.path.dirname(torch.__file__)
        patterns = ("lib/libgomp*.so*", "../torch.libs/libgomp*.so*", "lib/libomp*.dylib", "lib/libiomp5*.so")
        paths = [p for pattern in patterns for p in sorted(glob.glob(os.path.join(base, pattern)))]
        for path in paths if no_load is not None else []:
            try:
                found = ctypes.CDLL(path, mode=no_load | os.RTLD_LAZY).omp_pause_resource_all
            except (OSError, AttributeError):  # not loaded in this process, or an older runtime
                continue
            found.argtypes, found.restype = [ctypes.c_int], ctypes.c_int
            _pause = found
            logger.debug("OpenMP teams are released through %s", path)
            break
    return _pause


def on_thread(thread: ModelThread | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` through ``thread``, or in the calling thread when there is none (CUDA)."""
    return fn(*args) if thread is None else thread.run(fn, *args)


def engine_call(thread: ModelThread | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the calling thread as one engine call (:meth:`ModelThread.call`)."""
    return fn(*args) if thread is None else thread.call(fn, *args)


def engine_method(method: Callable[..., T]) -> Callable[..., T]:
    """Decorator of an engine's methods (``self.model_thread``: a :class:`ModelThread`, or None on
    CUDA): each call is one engine call (:func:`engine_call`), so on the CPU's main thread its
    batches and the shaping of its outputs, then the release of the thread's team where due."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        return engine_call(self.model_thread, functools.partial(method, self, *args, **kwargs))

    return wrapper


def with_the_model(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator: ``fn`` runs where the CPU models run (:meth:`ModelThread.run` of the process's
    model thread), for torch work next to the engine's, such as an index's MaxSim."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return shared().run(functools.partial(fn, *args, **kwargs))

    return wrapper


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


def _new_lock() -> None:
    """In a forked child: the lock may have been held by a parent thread. The shared model
    thread stays (its pool starts a new worker there, :class:`ForkSafePool`), so the child's
    engines, old and new, still share one."""
    global _shared_lock
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    # a forked child cannot use the forking thread's OpenMP team (its workers do not exist
    # there: GNU OpenMP would wait on them), so the parent releases it before the fork
    os.register_at_fork(before=release_team, after_in_child=_new_lock)
