import faiss
import numpy as np
import pytest
import vllm_pool.retrievers.faiss_index as fi
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex


def test_choose_gpu(monkeypatch):
    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 0)
    assert fi.choose_gpu(None) is False and fi.choose_gpu(False) is False
    with pytest.raises(RuntimeError, match="no GPU"):
        fi.choose_gpu(True)
    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 2)
    assert fi.choose_gpu(None) is True and fi.choose_gpu(True) is True
    assert fi.choose_gpu(False) is False


def test_to_device_moves_only_when_chosen(monkeypatch):
    moved = []
    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(
        fi.faiss, "index_cpu_to_all_gpus", lambda idx: moved.append(idx) or idx, raising=False
    )
    index = faiss.IndexFlatIP(4)
    assert fi.to_device(index, None) is index and moved == [index]
    fi.to_device(index, False)
    assert len(moved) == 1

    def unsupported(idx):
        raise RuntimeError("no GPU version of HNSW")

    monkeypatch.setattr(fi.faiss, "index_cpu_to_all_gpus", unsupported, raising=False)
    assert fi.to_device(index, None) is index  # automatic: falls back to CPU
    with pytest.raises(RuntimeError):
        fi.to_device(index, True)


def test_hnsw_stays_on_the_cpu_with_several_gpus(monkeypatch):
    """FAISS has no GPU HNSW; with several GPUs its cloner does not refuse one (it copies the
    graph beside GPU storage read vector by vector), so the index is never handed to it."""
    moved = []
    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(
        fi.faiss, "index_cpu_to_all_gpus", lambda idx: moved.append(idx) or idx, raising=False
    )
    for spec in ("IDMap,HNSW16", "HNSW16,SQ8", "IDMap2,HNSW16,Flat"):
        index = faiss.index_factory(8, spec, faiss.METRIC_INNER_PRODUCT)
        assert fi.to_device(index, None) is index
        with pytest.raises(RuntimeError, match="HNSW index has no GPU version"):
            fi.to_device(index, True)
    assert moved == []
    flat = faiss.index_factory(8, "IDMap,Flat", faiss.METRIC_INNER_PRODUCT)
    assert fi.to_device(flat, None) is flat and moved == [flat]


def test_indexes_use_the_device_choice(monkeypatch, rng, make_docs):
    moved = []
    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(
        fi.faiss, "index_cpu_to_all_gpus", lambda idx: moved.append(idx) or idx, raising=False
    )
    monkeypatch.setattr(fi.faiss, "index_gpu_to_cpu", lambda idx: idx, raising=False)
    docs = make_docs(rng, 10, 8)
    mv = MultiVectorIndex.from_vectors(docs, index_type="ivf", nlist=2, nprobe=2)
    dense = DenseIndex.from_vectors(np.stack([d[0] for d in docs]))
    assert len(moved) == 2
    assert mv.search(docs[3], k=1)[0][0].id == "3" and dense.search(docs[3][0], 1)[0][0].id == "3"
    cpu_only = MultiVectorIndex.from_vectors(docs, index_type="ivf", nlist=2, use_gpu=False)
    assert len(moved) == 2 and cpu_only.search(docs[3], k=1)[0][0].id == "3"
    flat = MultiVectorIndex.from_vectors(docs)  # the exact scan reads its own token store: no FAISS
    assert len(moved) == 2 and flat._index is None and flat.search(docs[3], k=1)[0][0].id == "3"


@pytest.mark.gpu
@pytest.mark.skipif(fi.gpu_count() == 0, reason="needs a GPU build of FAISS and a GPU")
def test_gpu_matches_cpu(rng, make_docs):
    docs, queries = make_docs(rng, 200, 16), make_docs(rng, 5, 16)
    gpu = MultiVectorIndex.from_vectors(docs, index_type="ivf", nlist=4, use_gpu=True)
    cpu = MultiVectorIndex.from_vectors(docs, index_type="ivf", nlist=4, use_gpu=False)
    assert [[h.id for h in r] for r in gpu.search(queries, 10)] == [
        [h.id for h in r] for r in cpu.search(queries, 10)
    ]


def test_mixed_faiss_builds_are_named(monkeypatch):
    """faiss-cpu and a GPU build installed together share one ``faiss`` folder: named, so the
    import-time warning can say which package to keep."""
    import importlib.metadata

    from vllm_pool.retrievers import faiss_index

    def fake(installed):
        def version(name):
            if name not in installed:
                raise importlib.metadata.PackageNotFoundError(name)
            return "1.0"

        return version

    monkeypatch.setattr(importlib.metadata, "version", fake({"faiss-cpu", "faiss-gpu-cu12"}))
    assert faiss_index.mixed_builds() == "faiss-gpu-cu12"
    monkeypatch.setattr(importlib.metadata, "version", fake({"faiss-cpu"}))
    assert faiss_index.mixed_builds() is None
    monkeypatch.setattr(importlib.metadata, "version", fake({"faiss-gpu-cu12"}))
    assert faiss_index.mixed_builds() is None
