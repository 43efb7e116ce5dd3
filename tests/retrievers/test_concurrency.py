import threading

import numpy as np
from vllm_pool.retrievers import DenseIndex, MultiVectorIndex


def test_search_while_adding_from_another_thread(rng, make_docs):
    docs = make_docs(rng, 400, 8)
    mv = MultiVectorIndex.from_vectors(docs[:50], ids=[f"d{i}" for i in range(50)])
    dense = DenseIndex.from_vectors(np.stack([d[0] for d in docs[:50]]))
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        try:
            for start in range(50, 400, 10):
                batch = docs[start : start + 10]
                mv.add(batch, [f"d{i}" for i in range(start, start + 10)])
                dense.add(np.stack([d[0] for d in batch]), [str(i) for i in range(start, start + 10)])
                mv.remove([f"d{start - 50}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader():
        try:
            while not done.is_set():
                for hits in mv.search(docs[:3], k=5):
                    assert all(h.id.startswith("d") for h in hits)
                dense.search(np.stack([docs[0][0]]), k=3)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(mv) == 400 - 35 and len(dense) == 400
    assert mv.search(docs[399], k=1)[0][0].id == "d399"
