"""ColBERT multi-vector index settings: recall@k against exhaustive MaxSim, latency, memory.

Embeds passages with the engine's token_embed (all-MiniLM-L6-v2 with the encoder's defaults
for a plain embedding model: no [MASK] query augmentation, punctuation skipped in
documents; the figures in README.md were measured before that default changed, with
augmented queries), uses the first sentence of
held-out passages as queries, and for each index setting reports recall@k against
exhaustive fp32 MaxSim, search latency per query (median / p95), build time and bytes per
token vector (token store + candidate index). Writes benchmarks/results/colbert_recall.json.

    python benchmarks/colbert_recall.py                       # ~3,000 passages, 300 queries
    python benchmarks/colbert_recall.py --limit 500 --queries 50   # quick run
    python benchmarks/colbert_recall.py --fake                # random vectors, no engine
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from vllm_pool.retrievers import MultiVectorIndex

logger = logging.getLogger("colbert_recall")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT / "demo" / "corpus" / "python_docs_large.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "colbert_recall.json"

# name -> MultiVectorIndex options
SETTINGS: dict[str, dict] = {
    "default (flat, fp32, exact scan)": {},
    "ivf (nprobe 32), k'=256": {"index_type": "ivf"},
    "ivf (nprobe 32), k'=64": {"index_type": "ivf", "candidates_per_token": 64},
    "hnsw (ef 256), k'=256": {"index_type": "hnsw"},
    "ivf, fp16 store": {"index_type": "ivf", "storage": "fp16"},
    "ivf, int8 store": {"index_type": "ivf", "storage": "int8"},
    "ivf, pq store": {"index_type": "ivf", "storage": "pq"},
    "ivfpq + pq store": {"index_type": "ivfpq", "storage": "pq"},
}


def load_corpus(path: Path, limit: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Passages to index and queries (first sentences of the held-out passages).

    ``seed`` picks the held-out passages (0 for the reported rows; another one to tune on
    queries that are not the reported ones)."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get("text", "").strip()
            if len(text) > 20:
                texts.append(text)
    if len(texts) < n_queries + 10:
        raise SystemExit(f"{path}: only {len(texts)} passages, need more than {n_queries + 10}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    held_out = [texts[i] for i in order[:n_queries]]
    passages = [texts[i] for i in order[n_queries : n_queries + limit]]
    queries = [re.split(r"(?<=[.!?])\s|\n", t, maxsplit=1)[0][:200] for t in held_out]
    return passages, queries


def encode_with_engine(passages: list[str], queries: list[str], model: str, batch: int):
    from vllm_pool.retrievers import ColBERTEncoder

    from vllm_pool import LLM

    llm = LLM(model)
    enc = ColBERTEncoder.from_llm(llm)
    docs: list[np.ndarray] = []
    for start in tqdm(range(0, len(passages), batch), desc="encoding passages", unit="batch"):
        docs.extend(enc.encode_documents(passages[start : start + batch]))
    qs = enc.encode_queries(queries)
    return docs, qs, llm.model_name


def fake_vectors(n_docs: int, n_queries: int, dim: int = 64):
    """Clustered random unit vectors (documents share topics, queries resemble documents)."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((64, dim)).astype(np.float32)

    def sample(n_tokens: int) -> np.ndarray:
        topic = centers[rng.integers(0, 64, size=3)]
        x = topic[rng.integers(0, 3, n_tokens)] + 0.8 * rng.standard_normal((n_tokens, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    docs = [sample(int(rng.integers(20, 120))) for _ in range(n_docs)]
    qs = [sample(32) for _ in range(n_queries)]
    return docs, qs, "fake-random"


def measure(name: str, options: dict, docs, qs, truth, k: int, n_latency: int) -> dict:
    t0 = time.perf_counter()
    index = MultiVectorIndex.from_vectors(docs, use_gpu=False, **options)
    build_s = time.perf_counter() - t0
    found = index.search(qs, k=k)
    recall = float(
        np.mean([len({h.id for h in f} & t) / len(t) for f, t in zip(found, truth, strict=True) if t])
    )
    latencies = []
    for q in qs[:n_latency]:
        t0 = time.perf_counter()
        index.search([q], k=k)
        latencies.append((time.perf_counter() - t0) * 1000)
    mem = index.memory_usage()
    return {
        "setting": name,
        "options": options,
        f"recall@{k}": round(recall, 4),
        "latency_ms_median": round(float(np.median(latencies)), 2),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2),
        "build_s": round(build_s, 2),
        "bytes_per_vector": round(mem["bytes_per_vector"], 1),
        "bytes_per_vector_store": round(mem["bytes_per_vector_store"], 1),
        "bytes_per_vector_index": round(mem["bytes_per_vector_index"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="JSONL with 'text'")
    parser.add_argument("--limit", type=int, default=3000, help="passages to index")
    parser.add_argument("--queries", type=int, default=300, help="held-out queries")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--latency-queries", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fake", action="store_true", help="random vectors, no engine")
    parser.add_argument("--settings", default="", help="comma-separated substrings to select")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    t0 = time.perf_counter()
    if args.fake:
        docs, qs, model_name = fake_vectors(args.limit, args.queries)
        corpus = "fake"
    else:
        passages, queries = load_corpus(args.corpus, args.limit, args.queries)
        docs, qs, model_name = encode_with_engine(passages, queries, args.model, args.batch_size)
        corpus = str(args.corpus.relative_to(ROOT) if args.corpus.is_relative_to(ROOT) else args.corpus)
    encode_s = time.perf_counter() - t0
    n_tokens = sum(len(d) for d in docs)
    logger.info(
        "%d documents, %d token vectors (dim %d), %d queries; encoded in %.1f s",
        len(docs),
        n_tokens,
        docs[0].shape[1],
        len(qs),
        encode_s,
    )

    exact = MultiVectorIndex.from_vectors(docs, use_gpu=False)
    t0 = time.perf_counter()
    truth = [{h.id for h in hits} for hits in exact.search(qs, k=args.k, exhaustive=True)]
    exhaustive_ms = (time.perf_counter() - t0) * 1000 / len(qs)

    selected = [s.strip() for s in args.settings.split(",") if s.strip()]
    rows = []
    for name, options in SETTINGS.items():
        if selected and not any(s in name for s in selected):
            continue
        logger.info("measuring %s", name)
        rows.append(measure(name, options, docs, qs, truth, args.k, args.latency_queries))

    header = (
        f"{'setting':32} {'recall@' + str(args.k):>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'build s':>8} {'B/vec':>8} {'store':>7} {'index':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['setting']:32} {r[f'recall@{args.k}']:>9.4f} {r['latency_ms_median']:>8.2f} "
            f"{r['latency_ms_p95']:>8.2f} {r['build_s']:>8.2f} {r['bytes_per_vector']:>8.1f} "
            f"{r['bytes_per_vector_store']:>7.1f} {r['bytes_per_vector_index']:>7.1f}"
        )
    print(f"exhaustive MaxSim: {exhaustive_ms:.1f} ms per query (batched)")

    result = {
        "benchmark": "colbert_recall",
        "model": model_name,
        "corpus": corpus,
        "documents": len(docs),
        "token_vectors": n_tokens,
        "queries": len(qs),
        "k": args.k,
        "encode_s": round(encode_s, 1),
        "exhaustive_ms_per_query": round(exhaustive_ms, 2),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    os.replace(tmp, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
