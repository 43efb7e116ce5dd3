"""kill -9 during saves: the index folder always holds the previous or the new index, and the
leftovers of interrupted saves are removed by the next save or load."""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import fault_workers as fw
import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, IndexFormatError, MultiVectorIndex
from vllm_pool.retrievers.persistence import version_folder

CLASSES = {"dense": DenseIndex, "multivector": MultiVectorIndex}
STEPS_BEFORE_SWITCH = ["written", "renamed", "pointer-written"]
STEPS_AFTER_SWITCH = ["switched", "cleaned"]


def assert_consistent(index, kind: str) -> None:
    """Documents ``k0..k{n-1}``, each with its own vectors: no torn or mixed state."""
    n = len(index)
    records = index.get([f"k{i}" for i in range(n)])
    assert [r.id for r in records] == [f"k{i}" for i in range(n)]
    for i, r in enumerate(records):
        expected = fw.dense_vector(i)[None, :] if kind == "dense" else fw.token_vectors(i)
        np.testing.assert_allclose(np.reshape(r.vectors, expected.shape), expected, rtol=0, atol=1e-6)
        assert r.metadata["i"] == i


def assert_no_leftovers(path: Path) -> None:
    live = version_folder(path).name
    assert sorted(os.listdir(path)) == sorted([".lock", "CURRENT", live])
    assert sorted(os.listdir(path.parent)) == [path.name]


@pytest.mark.parametrize("kind", ["dense", "multivector"])
def test_kill_9_at_random_points_of_saves(tmp_path, fork_ctx, kind):
    path = tmp_path / "idx"
    rng = random.Random(1234)
    counts = []
    for _ in range(18):
        ready = fork_ctx.Event()
        child = fork_ctx.Process(target=fw.save_forever, args=(kind, str(path), ready))
        child.start()
        assert ready.wait(60)
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()
        child.join(30)
        assert child.exitcode == -signal.SIGKILL, child.exitcode  # killed, not failed on its own
        if not (path / "CURRENT").exists():
            continue  # killed before its first save finished: there was never an index
        loaded = CLASSES[kind].load(path)
        assert_consistent(loaded, kind)
        counts.append(len(loaded))
    assert counts == sorted(counts), counts  # a later state never loses documents
    assert counts and counts[-1] >= 2, counts  # saves progressed (slowly on a loaded machine)
    loaded.save(path)  # the next save removes whatever the kills left
    assert_no_leftovers(path)
    assert_consistent(CLASSES[kind].load(path), kind)


def _saved(path: Path, kind: str, n: int):
    index = CLASSES[kind](fw.DIM)
    for _ in range(n):
        fw.add_next(index, kind)
    index.save(path)
    return index


@pytest.mark.parametrize("kind", ["dense", "multivector"])
@pytest.mark.parametrize("step", STEPS_BEFORE_SWITCH + STEPS_AFTER_SWITCH)
def test_kill_between_the_steps_of_the_swap(tmp_path, fork_ctx, kind, step):
    path = tmp_path / "idx"
    _saved(path, kind, 3)
    child = fork_ctx.Process(target=fw.die_at, args=(kind, str(path), step))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    loaded = CLASSES[kind].load(path)  # never "no index": the previous or the new one
    assert len(loaded) == (3 if step in STEPS_BEFORE_SWITCH else 4)
    assert_consistent(loaded, kind)
    assert_no_leftovers(path)  # the load removed what the killed save left
    fw.add_next(loaded, kind)
    loaded.save(path)
    assert len(CLASSES[kind].load(path)) == len(loaded)


def test_folders_of_the_older_two_rename_save_are_recovered(tmp_path):
    """The older save could leave the index stranded in ``.idx.old-*`` with nothing at ``idx``."""
    src = tmp_path / "src"
    _saved(src, "dense", 5)
    stranded = tmp_path / ".idx.old-0123abcd"
    shutil.copytree(version_folder(src), stranded)  # the flat layout of the older writer
    shutil.copytree(version_folder(src), tmp_path / ".idx.tmp-4567cdef")
    os.utime(tmp_path / ".idx.tmp-4567cdef", (time.time() - 7200, time.time() - 7200))  # stale
    shutil.copytree(version_folder(src), tmp_path / ".idx.tmp-89abcdef")  # fresh: maybe a build
    path = tmp_path / "idx"
    loaded = DenseIndex.load(path)
    assert_consistent(loaded, "dense")
    assert len(loaded) == 5 and version_folder(path) == path  # flat layout, read in place
    fw.add_next(loaded, "dense")
    loaded.save(path)  # converts the flat layout and drops the older save's leftovers
    assert sorted(os.listdir(tmp_path)) == [".idx.tmp-89abcdef", "idx", "src"]
    assert sorted(os.listdir(path)) == sorted([".lock", "CURRENT", version_folder(path).name])
    assert_consistent(DenseIndex.load(path), "dense")


def test_pointer_deleted_by_hand_falls_back_to_the_newest_version(tmp_path):
    path = tmp_path / "idx"
    index = _saved(path, "dense", 2)
    (path / "CURRENT").unlink()
    assert len(DenseIndex.load(path)) == 2
    fw.add_next(index, "dense")
    index.save(path)
    assert len(DenseIndex.load(path)) == 3
    assert_no_leftovers(path)


def test_save_onto_a_file_or_nothing_there(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        DenseIndex(4).save(tmp_path / "file")
    with pytest.raises(IndexFormatError, match="no index folder there"):
        DenseIndex.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="no index in this folder"):
        DenseIndex.load(tmp_path / "empty")


def test_a_version_being_read_is_not_deleted_by_a_save(tmp_path):
    from vllm_pool.retrievers import index_folder

    path = tmp_path / "idx"
    index = _saved(path, "dense", 2)
    old = version_folder(path)
    with index_folder.reading(old):  # a load in progress
        fw.add_next(index, "dense")
        index.save(path)
        assert old.is_dir() and version_folder(path) != old  # switched, but kept for its reader
        assert len(DenseIndex.load(path)) == 3
    fw.add_next(index, "dense")
    index.save(path)
    assert not old.exists()
    assert_no_leftovers(path)
