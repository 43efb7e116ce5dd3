"""Quantized dense indexes (int8, binary + rescoring) against the float index.

For the demo corpus embedded with all-MiniLM-L6-v2 (held-out passages' first sentences and
the shipped queries as queries) and a larger synthetic set (a Gaussian with the corpus
embeddings' mean and covariance, unit-normalized; queries are noisy copies of documents),
reports for each storage and ``rescore_multiplier``: recall@10 against the exact float
index (``DenseIndex()``, fp32 flat), bytes per vector, and search latency per query
(median of single-query searches, FAISS on one thread). Writes ``benchmarks/results/quantized_dense.json``.

Bytes per vector, counted honestly: ``vector_bytes`` is the vector data held in memory
(the fp32 index: its numpy copy; quantized: the codes, which are all they hold);
``index_bytes`` adds the fp32 index's FAISS copy (``IndexIDMap(IndexFlatIP)``: vectors
and 8-byte labels); ``disk_bytes`` is what ``rescore="float"`` keeps in its memory-mapped
file (the float32 vectors; the OS pages in only the candidates a search reads). Ids,
metadata and the id registry are the same for every storage and are not counted.

    python benchmarks/quantized_dense.py                 # corpus + 100,000 synthetic vectors
    python benchmarks/quantized_dense.py --fake --synthetic 5000   # no engine, quick
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, ROOT, machine, write_result  # noqa: E402
from vllm_pool.retrievers import DenseIndex  # noqa: E402

K = 10
SETTINGS = [
    ("int8", 1, "codes"),
    ("int8", 4, "codes"),
    *[("binary", m, "codes") for m in (1, 4, 10)],
    *[("binary", m, "float") for m in (4, 10, 20)],
]
"""(storage, rescore_multiplier, rescore): ``rescore="codes"`` is ST's ``semantic_search_faiss``
(candidates rescored against the codes); ``"float"`` rescores them against the float32
vectors kept in a memory-mapped file (on disk, not counted as memory)."""


def corpus_vectors(n_queries: int, fake: bool, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Embedded passages to index and queries (held-out first sentences + shipped queries)."""
    rows = [json.loads(line) for line in open(CORPUS, encoding="utf-8") if line.strip()]
    texts = [r["text"] for r in rows]
    held = texts[-n_queries:]
    docs = texts[:-n_queries]
    queries = [re.split(r"(?<=[.!?])\s", t.strip(), maxsplit=1)[0] for t in held]
    with open(ROOT / "demo" / "corpus" / "queries.jsonl", encoding="utf-8") as f:
        queries += [json.loads(line)["query"] for line in f if line.strip()]
    if fake:
        rng = np.random.default_rng(0)
        return (
            rng.standard_normal((len(docs), 384), np.float32),
            rng.standard_normal((len(queries), 384), np.float32),
        )
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            if len(saved["docs"]) == len(docs) and len(saved["queries"]) == len(queries):
                return saved["docs"], saved["queries"]
    from vllm_pool import LLM

    llm = LLM("sentence-transformers/all-MiniLM-L6-v2")
    embed = lambda xs: np.asarray([o.outputs.embedding for o in llm.embed(xs, use_tqdm=True)], np.float32)  # noqa: E731
    out = embed(docs), embed(queries)
    if cache is not None:
        np.savez(cache, docs=out[0], queries=out[1])
    return out


def synthetic(like: np.ndarray, n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors from a Gaussian with the mean and covariance of ``like``; queries
    are documents plus noise of a third of their spread."""
    rng = np.random.default_rng(seed)
    mean, cov = like.mean(0), np.cov(like, rowvar=False) + 1e-6 * np.eye(like.shape[1])
    x = rng.multivariate_normal(mean, cov, size=n, method="cholesky").astype(np.float32)
    q = x[rng.integers(0, n, n_queries)] + rng.multivariate_normal(
        np.zeros_like(mean), cov / 9, size=n_queries, method="cholesky"
    ).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), q


def latency_ms(index: DenseIndex, queries: np.ndarray, n: int = 100) -> float:
    """Median ms of ``n`` single-query searches (FAISS on one thread: OpenMP's spinning
    threads make single queries erratic on a shared machine)."""
    times = []
    for q in queries[:n]:
        t0 = time.perf_counter()
        index.search(q, k=K)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(name: str, docs: np.ndarray, queries: np.ndarray) -> dict:
    ids = [str(i) for i in range(len(docs))]
    t0 = time.perf_counter()
    ref_index = DenseIndex.from_vectors(docs, ids)
    build_fp32 = time.perf_counter() - t0
    truth = [{h.id for h in hits} for hits in ref_index.search(queries, k=K)]
    dim = docs.shape[1]
    fp32_vector_bytes = 4 * dim
    fp32_index_bytes = 2 * 4 * dim + 8  # numpy copy + FAISS IndexFlatIP copy + its int64 label
    rows = [
        {
            "storage": "fp32",
            "rescore_multiplier": None,
            "rescore": None,
            "disk_bytes": 0,
            "recall@10": 1.0,
            "vector_bytes": fp32_vector_bytes,
            "index_bytes": fp32_index_bytes,
            "fraction_of_fp32_vectors": 1.0,
            "latency_ms": latency_ms(ref_index, queries),
            "build_s": build_fp32,
        }
    ]
    built: dict[tuple[str, str], DenseIndex] = {}
    for storage, mult, rescore in SETTINGS:
        t0 = time.perf_counter()
        if (storage, rescore) not in built:
            built[storage, rescore] = DenseIndex.from_vectors(docs, ids, storage=storage, rescore=rescore)
        index = built[storage, rescore]
        build = time.perf_counter() - t0
        index.config["rescore_multiplier"] = mult
        found = index.search(queries, k=K)
        recall = float(np.mean([len(t & {h.id for h in f}) / K for t, f in zip(truth, found)]))
        codes = index._vectors[: len(docs)]
        per_vector = codes.shape[1] * codes.itemsize
        rows.append(
            {
                "storage": storage,
                "rescore_multiplier": mult,
                "rescore": rescore,
                "disk_bytes": 4 * dim if rescore == "float" else 0,
                "recall@10": recall,
                "vector_bytes": per_vector,
                "index_bytes": per_vector,
                "fraction_of_fp32_vectors": per_vector / fp32_vector_bytes,
                "latency_ms": latency_ms(index, queries),
                "build_s": build,
            }
        )
    for r in rows:
        mult = "" if r["rescore_multiplier"] is None else f" x{r['rescore_multiplier']} {r['rescore']}"
        print(
            f"{name:>10} {r['storage']:>6}{mult:<10} recall@10 {r['recall@10']:.3f}  "
            f"{r['vector_bytes']:>5} B/vector (1/{1 / r['fraction_of_fp32_vectors']:.0f})  "
            f"{r['latency_ms']:.2f} ms/query"
        )
    return {"documents": len(docs), "queries": len(queries), "dim": dim, "rows": rows}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--queries", type=int, default=300, help="held-out corpus passages used as queries")
    parser.add_argument("--synthetic", type=int, default=100_000, help="synthetic vectors (0: none)")
    parser.add_argument("--fake", action="store_true", help="random vectors instead of the engine (dry run)")
    parser.add_argument("--cache", type=Path, help="an .npz keeping the corpus embeddings between runs")
    parser.add_argument("--name", default="quantized_dense", help="result file name (without .json)")
    args = parser.parse_args()

    import faiss

    faiss.omp_set_num_threads(1)
    docs, queries = corpus_vectors(args.queries, args.fake, args.cache)
    result = {"machine": machine(), "k": K, "model": None if args.fake else "all-MiniLM-L6-v2"}
    result["corpus"] = measure("corpus", docs, queries)
    if args.synthetic:
        sdocs, squeries = synthetic(np.concatenate([docs, queries]), args.synthetic, 300)
        result["synthetic"] = measure("synthetic", sdocs, squeries)
    path = write_result(args.name, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
