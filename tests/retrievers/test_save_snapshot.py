"""An index is locked while a save takes its snapshot, not while the files are written: a
save waiting for the folder (another process saving there) or writing a large index does
not stop other threads' searches and adds (for a multi-vector index: nor, through the model
thread its searches run on, every engine call of the process). The folder gets the index as
it was when ``save`` was called; saves of one index land in call order."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import numpy as np
import pytest
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex
from vllm_pool.retrievers.index_folder import writer_lock

DIM = 8
rng = np.random.default_rng(0)


def _dense():
    index = DenseIndex(DIM)
    index.add(rng.standard_normal((20, DIM)), [f"d{i}" for i in range(20)])
    return index, rng.standard_normal((1, DIM)).astype(np.float32), lambda: rng.standard_normal((1, DIM))


def _multivector():
    index = MultiVectorIndex(DIM)
    index.add([rng.standard_normal((3, DIM)) for _ in range(20)], [f"d{i}" for i in range(20)])
    return index, rng.standard_normal((2, DIM)).astype(np.float32), lambda: [rng.standard_normal((3, DIM))]


@pytest.mark.parametrize("make", [_dense, _multivector], ids=["dense", "multivector"])
def test_searches_and_adds_go_on_while_a_save_waits_for_the_folder(tmp_path, make, monkeypatch):
    index, query, new_doc = make()
    kind = type(index)
    module = importlib.import_module(kind.__module__)
    writing = threading.Event()
    write = module.save_index_files

    def save_index_files(*args):  # the snapshot is taken: the files are written next
        writing.set()
        write(*args)

    monkeypatch.setattr(module, "save_index_files", save_index_files)
    folder = tmp_path / "index"
    folder.mkdir()
    done: dict[str, object] = {}

    def save():
        index.save(folder)
        done["saved"] = True

    def use():
        done["hits"] = [h.id for h in index.search(query, k=3)[0]]
        index.add(new_doc(), ["late"])

    with writer_lock(Path(folder)):  # as another process saving there: this save waits
        saver = threading.Thread(target=save)
        saver.start()
        writing.wait()
        user = threading.Thread(target=use)
        user.start()
        user.join(60)
        blocked = user.is_alive()
    saver.join()
    user.join()
    assert not blocked, "a search and an add waited for the save's disk write"
    assert len(done["hits"]) == 3
    saved = kind.load(folder)
    assert "late" not in saved.ids() and len(saved) == 20  # the index as it was when save was called
    assert "late" in index.ids()


def test_saves_of_one_index_land_in_call_order(tmp_path):
    index, _, new_doc = _dense()
    folder = tmp_path / "index"
    for i in range(5):
        index.add(new_doc(), [f"n{i}"])
        index.save(folder)
        assert len(DenseIndex.load(folder)) == 21 + i
