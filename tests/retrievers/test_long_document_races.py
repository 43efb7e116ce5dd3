"""A long document's windows are read and changed under the index's lock: a delete and a
re-add of the same document in two threads end with the document wholly deleted or wholly
re-added, never with orphan windows (found by search, invisible to get and delete)."""

from __future__ import annotations

import threading

import numpy as np
from vllm_pool.retrievers import MultiVectorIndex
from vllm_pool.retrievers import long_documents as ld

DIM = 8


def _windows(rng, n):
    ids = [ld.window_id("X", j) for j in range(n)]
    metas = [{ld.PARENT_KEY: "X", ld.WINDOWS_KEY: n} for _ in range(n)]
    return [rng.standard_normal((3, DIM)).astype(np.float32) for _ in range(n)], ids, metas


def _x_ids(index):
    return sorted(i for i in index.ids() if i.startswith("X"))


def _race(index, first, second):
    """Run ``first`` on this thread; when it changes the index, start ``second`` in another
    thread and give it a moment to run before the change goes on."""
    other = threading.Thread(target=second)
    remove, add = index.remove, index.add
    started = []

    def hook(method):
        def run(*args, **kwargs):
            if not started:
                started.append(True)
                other.start()
                other.join(0.3)  # with the lock held, ``second`` waits for ``first``
            return method(*args, **kwargs)

        return run

    index.remove, index.add = hook(remove), hook(add)
    try:
        first()
    finally:
        index.remove, index.add = remove, add
    other.join()


def test_a_re_add_during_a_delete_is_not_torn():
    rng = np.random.default_rng(0)
    index = MultiVectorIndex(DIM)
    ld.replace(index, ["X"], *_windows(rng, 3))
    six = _windows(rng, 6)
    _race(index, lambda: ld.remove(index, ["X"]), lambda: ld.replace(index, ["X"], *six))
    assert _x_ids(index) == sorted(six[1])  # the delete, then the whole re-add
    assert ld.remove(index, ["X"]) == 1 and _x_ids(index) == []


def test_a_delete_during_a_re_add_is_not_torn():
    rng = np.random.default_rng(1)
    index = MultiVectorIndex(DIM)
    ld.replace(index, ["X"], *_windows(rng, 6))
    three = _windows(rng, 3)
    removed = []
    _race(index, lambda: ld.replace(index, ["X"], *three), lambda: removed.append(ld.remove(index, ["X"])))
    assert removed == [1] and _x_ids(index) == []  # the re-add, then the whole delete
