"""Worker threads that survive ``os.fork``: a forked child has none of its parent's threads.

A ``ThreadPoolExecutor`` made in the parent believes its idle worker still exists in the
child, so work submitted there never runs; a lock or a "someone is driving" flag held by a
parent thread at the fork is never released. :class:`ForkSafePool` starts a new worker in
the child on first use, and :func:`reset_in_child` registers what an object must reset.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ForkSafePool(Executor):
    """A one-thread pool that a forked child replaces with its own on first use.

    Args:
        name: the worker thread's name prefix.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._pid = os.getpid()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    @property
    def forked(self) -> bool:
        """Whether this process is a child forked after the pool was made (or last used)."""
        return os.getpid() != self._pid

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self.forked:
            self._pid, self._pool = os.getpid(), ThreadPoolExecutor(1, thread_name_prefix=self._name)
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


_resets: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()


def reset_in_child(obj: Any, reset: Callable[[Any], None]) -> None:
    """Call ``reset(obj)`` in a forked child, while ``obj`` lives (it is held weakly)."""
    _resets[obj] = reset


def _after_fork_in_child() -> None:
    for obj, reset in list(_resets.items()):
        reset(obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
