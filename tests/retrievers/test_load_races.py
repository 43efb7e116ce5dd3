"""Loads that race a save: the reader gets the old index or the new one, never an error.

Each test makes a save land at one precise point of a load (between reading ``CURRENT`` and
opening the version it names, or while the version's files are read), as a save in another
process would, then checks what the load returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from vllm_pool.integrations import _colbert
from vllm_pool.retrievers import (
    ColBERTConfig,
    DenseIndex,
    IndexFormatError,
    MultiVectorIndex,
    ShardedIndex,
    index_folder,
    load_index,
)

DIM = 8
RNG = np.random.default_rng(3)


def _dense(n: int, start: int = 0) -> DenseIndex:
    ids = [f"d{i:03d}" for i in range(start, start + n)]
    return DenseIndex.from_vectors(RNG.normal(size=(n, DIM)).astype(np.float32), ids)


def _multi(n: int, start: int = 0) -> MultiVectorIndex:
    ids = [f"m{i:03d}" for i in range(start, start + n)]
    return MultiVectorIndex.from_vectors([RNG.normal(size=(3, DIM)).astype(np.float32) for _ in ids], ids)


def _save_once_at_pointer_read(monkeypatch: pytest.MonkeyPatch, save: Callable[[], None]) -> list[str]:
    """Make the next read of a ``CURRENT`` pointer run ``save`` right after it: the version it
    named is switched away from and removed before the load opens it. Returns [that name] once read."""
    real = index_folder.read_pointer
    seen: list[str] = []

    def read_then_save(folder):
        name = real(folder)
        if not seen:
            seen.append(name)  # disarmed before the save, which reads pointers itself
            save()
        return name

    monkeypatch.setattr(index_folder, "read_pointer", read_then_save)
    return seen


KINDS = {"dense": (DenseIndex, _dense), "multivector": (MultiVectorIndex, _multi)}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_save_between_the_pointer_and_the_version_reads_the_new_index(tmp_path, monkeypatch, kind):
    cls, make = KINDS[kind]
    path = tmp_path / "idx"
    make(2).save(path)
    old = index_folder.version_folder(path)
    new = make(3, start=10)
    seen = _save_once_at_pointer_read(monkeypatch, lambda: new.save(path))
    loaded = cls.load(path)
    assert seen == [old.name] and not old.exists()  # the named version was gone when opened
    assert loaded.ids() == new.ids()
    for got, want in zip(loaded.get(new.ids()), new.get(new.ids()), strict=True):
        np.testing.assert_array_equal(got.vectors, want.vectors)


def test_saves_that_keep_switching_end_in_the_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    index = _dense(2)
    index.save(path)
    real = index_folder.read_pointer
    saves: list[str] = []
    busy = threading.Lock()

    def read_then_save(folder):
        name = real(folder)
        if busy.acquire(blocking=False):  # not the save's own pointer reads
            try:
                saves.append(name)
                index.save(path)  # every pointer the load reads is stale at once
            finally:
                busy.release()
        return name

    monkeypatch.setattr(index_folder, "read_pointer", read_then_save)
    with pytest.raises(IndexFormatError, match=r"CURRENT: names v-\d+-[0-9a-f]+, which is not a folder"):
        DenseIndex.load(path)
    assert len(saves) >= 2  # retried, then gave up


def _colbert_settings() -> dict[str, Any]:
    return _colbert.retriever_settings("m", DIM, ColBERTConfig(), False, 32, truncate=True)


def test_colbert_folder_load_racing_a_save_reads_the_new_retriever(tmp_path, monkeypatch):
    path = tmp_path / "ret"
    _colbert.save(path, _multi(2), _colbert_settings())
    new = _multi(3, start=10)
    seen = _save_once_at_pointer_read(monkeypatch, lambda: _colbert.save(path, new, _colbert_settings()))
    index, settings = _colbert.load(path)
    assert seen and index.ids() == new.ids() and settings == _colbert_settings()
    monkeypatch.undo()
    with pytest.raises(IndexFormatError, match="no saved ColBERT retriever"):
        _colbert.load(tmp_path / "missing")


def _sharded(start: int) -> ShardedIndex:
    return ShardedIndex([_dense(2, start), _dense(2, start + 2)])


def test_sharded_load_racing_a_save_at_the_pointer_reads_the_new_index(tmp_path, monkeypatch):
    path = tmp_path / "sh"
    _sharded(0).save(path)
    new = _sharded(10)
    old = index_folder.version_folder(path, marker="shards.json")
    seen = _save_once_at_pointer_read(monkeypatch, lambda: new.save(path))
    loaded = ShardedIndex.load(path)
    assert seen == [old.name] and not old.exists()
    assert loaded.ids() == new.ids() and [len(s) for s in loaded.shards] == [2, 2]


def test_sharded_version_being_read_is_kept_for_its_reader(tmp_path, monkeypatch):
    path = tmp_path / "sh"
    old, new = _sharded(0), _sharded(10)
    old.save(path)
    real = DenseIndex.load.__func__
    saved = []

    def save_then_load(cls, *args, **kwargs):
        if not saved:  # a save lands while the first shard is read
            saved.append(True)
            new.save(path)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(DenseIndex, "load", classmethod(save_then_load))
    loaded = ShardedIndex.load(path)
    assert saved and loaded.ids() == old.ids()  # the version it started on, whole
    live = index_folder.version_folder(path, marker="shards.json")
    assert [p.name for p in path.iterdir() if p.name.startswith("v-")] == [live.name]  # then cleaned
    assert ShardedIndex.load(path).ids() == new.ids()


def test_load_index_racing_a_save_reads_the_new_index(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    _multi(2).save(path)
    new = _dense(3, start=10)  # another kind: the kind read must be that of the version loaded
    seen = _save_once_at_pointer_read(monkeypatch, lambda: new.save(path))
    loaded = load_index(path)
    assert seen and isinstance(loaded, DenseIndex) and loaded.ids() == new.ids()


def test_sharded_loads_in_a_thread_while_another_saves(tmp_path):
    path = tmp_path / "sh"
    versions = [_sharded(0), _sharded(10)]
    versions[0].save(path)
    expected = [v.ids() for v in versions]
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(30):
                versions[(i + 1) % 2].save(path)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    loads = 0
    while not done.is_set() or loads == 0:
        try:
            assert ShardedIndex.load(path).ids() in expected
        except Exception as exc:  # reported after the writer stops
            errors.append(exc)
        loads += 1
    thread.join()
    assert errors == []
