"""ColBERT at scale: the exact flat scan against the PLAID-style compressed index.

Datasets: (a) the MiniLM token vectors (ColBERT conventions, no query augmentation) of
``demo/corpus/python_docs_large.jsonl`` with held-out queries (first sentences of passages
left out of the index), and (b) synthetic clustered vectors: a Gaussian mixture in 128-d,
64 tokens per passage, 32-token queries made from noisy tokens of a random passage's
vocabulary. For each: recall@10 against exhaustive fp32 MaxSim, p50 / p95 ms per query (one
query per call), build time, bytes per token vector (``memory_usage``) and the process's
peak RSS. Writes ``benchmarks/results/colbert_scale.json`` (``--device cuda``:
``colbert_scale_gpu.json``; ``--name`` another name). The README's table comes from
``colbert_scale.json`` (corpus and 10^5), ``colbert_scale_1e6.json`` (10^6),
``colbert_scale_1e6_seed1.json`` (10^6, another synthetic corpus: ``--seed 1``),
``colbert_scale_minilm_tuned.json`` (the corpus with the held-out-tuned search settings) and
the held-out grids ``colbert_scale_tune_seed1.json`` (synthetic) and
``colbert_scale_tune_minilm_seed1.json`` (MiniLM, other held-out passages as queries).

    python -m benchmarks.colbert_scale                      # CPU: corpus, 1e5 and 1e6 vectors
    python -m benchmarks.colbert_scale --scales 1e6 --no-corpus --nbits 1 2 --name colbert_scale_1e6
    python -m benchmarks.colbert_scale --scales --nbits 2 --ncells 4 --threshold 0.4 --ndocs 512 \
        --name colbert_scale_minilm_tuned                 # the corpus, tuned search settings
    python -m benchmarks.colbert_scale --scales 1e5 --no-corpus --queries 30
    python -m benchmarks.colbert_scale --device cuda --scales 1e6 1e7 1e8
    python -m benchmarks.colbert_scale --dry-run            # tiny, GPU code path on the CPU
    python -m benchmarks.colbert_scale --tune --seed 1 --scales 1e5 --nbits 2 --no-corpus  # held out
    python -m benchmarks.colbert_scale --tune --seed 1 --scales --nbits 2       # MiniLM, held out

On a GPU the flat row is the exact scan of fp16 vectors held on the device (blocked GEMM +
max per passage + sum, the one MaxSim kernel), and ``plaid`` searches on the device too.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from vllm_pool.retrievers import MultiVectorIndex

from benchmarks.common import CORPUS, machine, peak_rss_mb, write_result
from vllm_pool.maxsim_kernel import segment_maxsim

logger = logging.getLogger("colbert_scale")

DIM, DOC_LEN, QUERY_LEN = 128, 64, 32


# -- data --------------------------------------------------------------------------------
def synthetic(n_vectors: int, n_queries: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Passages of 64 unit vectors from a Gaussian mixture, and held-out 32-token queries.

    Parameters (unchanged since the first runs, so rows stay comparable): ``16 * sqrt(n)``
    token types (mixture means) uniform on the unit sphere, equally frequent; ``n_types / 16``
    topics of 64 types each; a passage draws its 64 tokens from two topics; a token is its
    type plus isotropic Gaussian noise of norm about 0.3 (cosine about 0.96 to its type, 0.92
    between two tokens of one type, about 0 between types), re-normalized. A query
    paraphrases a random passage: 32 of its token vectors with fresh noise (norm about 0.1),
    so its vectors are not in the index. PLAID trains ``2**floor(log2(16 sqrt n))``
    centroids, so each centroid covers 1.24 types at 10^5, 1.95 at 10^6 and 1.09 at 5x10^6:
    the residuals (and the 2-bit codec's loss) are largest at 10^6 (mean residual norm 0.59
    there, against 0.29 for the noise alone). Real token vectors are not this uniform
    (Zipfian type frequencies, contextual spread); see README.md. The documents come out in
    float64 (NumPy 2 promotes ``float32 + float64 scalar * float32``); the indexes store fp32.
    """
    rng = np.random.default_rng(seed)
    n_docs = max(1, n_vectors // DOC_LEN)
    n_types = int(16 * np.sqrt(n_vectors))
    n_topics = max(4, n_types // 16)
    types = rng.standard_normal((n_types, DIM)).astype(np.float32)
    types /= np.linalg.norm(types, axis=1, keepdims=True)
    topics = rng.integers(0, n_types, (n_topics, 64))
    sigma = 0.3 / np.sqrt(DIM)

    def sample(vocab: np.ndarray, n: int) -> np.ndarray:
        x = types[rng.choice(vocab, n)] + sigma * rng.standard_normal((n, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    docs = []
    for _ in tqdm(range(n_docs), desc=f"synthetic {n_vectors:.0e}", unit="passage", mininterval=5):
        docs.append(sample(topics[rng.integers(0, n_topics, 2)].ravel(), DOC_LEN))
    queries = []
    for target in rng.integers(0, n_docs, n_queries):
        x = docs[target][rng.choice(DOC_LEN, QUERY_LEN, replace=False)]
        x = x + (0.1 / np.sqrt(DIM)) * rng.standard_normal(x.shape).astype(np.float32)
        queries.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return docs, queries


def minilm(n_queries: int, model: str, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """MiniLM ColBERT token vectors of the demo corpus, and held-out queries (``seed``: which
    passages are held out; the reported rows use 0)."""
    from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder

    from benchmarks.colbert_recall import load_corpus
    from vllm_pool import LLM

    passages, queries = load_corpus(CORPUS, 10**9, n_queries, seed)
    enc = ColBERTEncoder.from_llm(LLM(model), ColBERTConfig(mask_augment=False))
    docs: list[np.ndarray] = []
    for start in tqdm(range(0, len(passages), 64), desc="encoding passages", unit="batch"):
        docs.extend(enc.encode_documents(passages[start : start + 64]))
    return docs, enc.encode_queries(queries)


# -- measuring ---------------------------------------------------------------------------
def recall_at(found: list[list[str]], truth: list[list[str]], k: int) -> float:
    shares = [len(set(f[:k]) & set(t[:k])) / min(k, len(t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(shares))


def row(
    name: str, build_s: float, recall: float, ms: list[float], bytes_per_vector: float, **extra: Any
) -> dict:
    r = {
        "setting": name,
        "recall@10": round(recall, 4),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "build_s": round(build_s, 1),
        "bytes_per_vector": round(bytes_per_vector, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        **extra,
    }
    logger.info("%s", r)
    return r


class DeviceScan:
    """The exact scan of fp16 vectors held on a device: blocked GEMM + max per passage + sum."""

    def __init__(self, docs: list[np.ndarray], device: str) -> None:
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.lengths = np.asarray([len(d) for d in docs], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.tokens = torch.empty((int(self.lengths.sum()), DIM), dtype=dtype, device=device)
        for i in range(0, len(docs), 4096):  # upload in chunks: no second full copy on the host
            chunk = np.concatenate(docs[i : i + 4096])
            rows = slice(int(self.starts[i]), int(self.starts[i]) + len(chunk))
            self.tokens[rows] = torch.from_numpy(chunk).to(device, dtype)
        self.device = device

    def search(self, q: np.ndarray, k: int = 10) -> list[str]:
        qt = torch.from_numpy(q).to(self.device)
        scores = segment_maxsim(qt, self.tokens, self.starts, self.lengths)[0]
        top = torch.topk(scores, min(k, len(scores))).indices.cpu().numpy()
        return [str(i) for i in top]


def interleaved_latency(searches: list[Any], queries: list[np.ndarray], n: int) -> list[list[float]]:
    """ms per query of each search, timed query by query in turn (so contention from other
    processes on a shared machine hits every setting alike)."""
    for search in searches:
        search(queries[0])  # warm-up
    out: list[list[float]] = [[] for _ in searches]
    for q in queries[:n]:
        for times, search in zip(out, searches, strict=True):
            t0 = time.perf_counter()
            search(q)
            times.append((time.perf_counter() - t0) * 1000)
    return out


def decoded_truth(index: MultiVectorIndex, queries: list) -> list[list[str]]:
    """Top 10 by exhaustive fp32 MaxSim over the index's own decompressed vectors: what a
    lossless search of the compressed index returns (recall against it = the search's loss)."""
    ids = [str(i) for i in range(len(index))]
    decoded = MultiVectorIndex.from_vectors([r.vectors for r in index.get(ids)], ids=ids, use_gpu=False)
    return [[h.id for h in hits] for hits in decoded.search(queries, k=10, exhaustive=True)]


def measure_dataset(
    name: str,
    docs: list,
    queries: list,
    args: argparse.Namespace,
    device: str = "cpu",
    device_path: bool = False,
) -> list[dict]:
    """Flat exact and plaid (each ``--nbits``) on one dataset, timed in the same process.

    ``device_path``: the exact scan of vectors held on ``device`` (fp16 on a GPU) instead of
    the CPU flat index, and plaid searching on ``device`` (the GPU rows; on the CPU a dry run).
    Recall columns: ``recall@10`` against exhaustive fp32 MaxSim of the original vectors;
    ``recall@10_vs_decoded`` (plaid) against exhaustive MaxSim of the index's decompressed
    vectors, which separates the search's loss from the codec's.
    """
    n_vec = sum(len(d) for d in docs)
    logger.info("%s: %d passages, %d token vectors, %d queries", name, len(docs), n_vec, len(queries))
    meta = {"dataset": name, "passages": len(docs), "token_vectors": n_vec, "queries": len(queries),
            "device": device}  # fmt: skip
    t0 = time.perf_counter()
    flat = MultiVectorIndex.from_vectors(docs, use_gpu=False)
    builds = [time.perf_counter() - t0]
    truth = [[h.id for h in hits] for hits in flat.search(queries, k=10, exhaustive=True)]  # fp32 reference
    if not device_path:
        found = [[h.id for h in hits] for hits in flat.search(queries, k=10)]
        searches = [lambda q, ix=flat: ix.search(q, k=10)]
        rows = [dict(setting="flat (exact, fp32)", bytes_per_vector=flat.memory_usage()["bytes_per_vector"])]
    else:
        flat = None
        t0 = time.perf_counter()
        scan = DeviceScan(docs, device)
        builds = [time.perf_counter() - t0]
        found = [scan.search(q) for q in queries]
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        searches = [lambda q: (scan.search(q), sync())]
        per_vector = scan.tokens.element_size() * DIM + 16 / DOC_LEN
        rows = [dict(setting=f"flat (exact scan, {str(scan.tokens.dtype)[6:]} on {device})",
                     bytes_per_vector=per_vector)]  # fmt: skip
    rows[0]["recall@10"] = recall_at(found, truth, 10)
    search_kwargs = {k: v for k, v in (("ncells", args.ncells), ("ndocs", args.ndocs),
                     ("centroid_score_threshold", args.threshold)) if v is not None}  # fmt: skip
    for nbits in args.nbits:
        t0 = time.perf_counter()
        index = MultiVectorIndex.from_vectors(
            docs, index_type="plaid", nbits=nbits, device=device, **search_kwargs
        )
        builds.append(time.perf_counter() - t0)
        found = [[h.id for h in hits] for hits in index.search(queries, k=10)]
        settings = {k: index.config[k] for k in ("ncells", "ndocs", "centroid_score_threshold")}
        rows.append({
            "setting": f"plaid nbits={nbits}",
            "recall@10": recall_at(found, truth, 10),
            "recall@10_vs_decoded": round(recall_at(found, decoded_truth(index, queries), 10), 4),
            "bytes_per_vector": index.memory_usage()["bytes_per_vector"],
            "centroids": index._store.codec.num_centroids,
            **settings,
        })  # fmt: skip
        searches.append(lambda q, ix=index: ix.search(q, k=10))
    times = interleaved_latency(searches, queries, min(len(queries), args.latency_queries))
    out = []
    for r, build, ms in zip(rows, builds, times, strict=True):
        setting, recall, per_vector = r.pop("setting"), r.pop("recall@10"), r.pop("bytes_per_vector")
        out.append(row(setting, build, recall, ms, per_vector, **r, **meta))
    flat_p50 = out[0]["p50_ms"]
    for r in out[1:]:
        r["speedup_p50_vs_flat"] = round(flat_p50 / r["p50_ms"], 2)
    return out


def tune(name: str, docs: list, queries: list, args: argparse.Namespace) -> list[dict]:
    """A grid of plaid search settings (``ncells`` x ``centroid_score_threshold`` x ``ndocs``)
    on one index, k=10: recall@10 against fp32 and against the decompressed vectors, p50 ms.
    Run it on held-out data (``--seed 1``: other synthetic vectors, other held-out MiniLM
    passages as queries), not on the data the table reports."""
    flat = MultiVectorIndex.from_vectors(docs, use_gpu=False)
    truth = [[h.id for h in hits] for hits in flat.search(queries, k=10, exhaustive=True)]
    del flat
    out = []
    for nbits in args.nbits:
        index = MultiVectorIndex.from_vectors(docs, index_type="plaid", nbits=nbits)
        decoded = decoded_truth(index, queries)
        grid = itertools.product((1, 2, 4), (0.3, 0.4, 0.5, 0.6), (128, 256, 512))
        for ncells, threshold, ndocs in grid:
            index.config.update(ncells=ncells, centroid_score_threshold=threshold, ndocs=ndocs)
            found = [[h.id for h in hits] for hits in index.search(queries, k=10)]
            search = [lambda q, ix=index: ix.search(q, k=10)]
            ms = interleaved_latency(search, queries, args.latency_queries)[0]
            r = {"dataset": name, "nbits": nbits, "ncells": ncells, "centroid_score_threshold": threshold,
                 "ndocs": ndocs, "recall@10": round(recall_at(found, truth, 10), 4),
                 "recall@10_vs_decoded": round(recall_at(found, decoded, 10), 4),
                 "p50_ms": round(float(np.percentile(ms, 50)), 2)}  # fmt: skip
            logger.info("%s", r)
            out.append(r)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="*", type=float, default=[1e5, 1e6], help="synthetic token vectors")
    parser.add_argument("--queries", type=int, default=100, help="queries per dataset (recall)")
    parser.add_argument("--latency-queries", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--nbits", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed (tune on another one)")
    parser.add_argument("--ncells", type=int, default=None, help="plaid cells per query token")
    parser.add_argument("--ndocs", type=int, default=None, help="plaid candidates after pruning")
    parser.add_argument("--threshold", type=float, default=None, help="plaid centroid_score_threshold")
    parser.add_argument("--no-corpus", action="store_true", help="skip the MiniLM corpus dataset")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU part")
    parser.add_argument("--threads", type=int, default=1, help="torch / FAISS threads (CPU)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes; the device code path on the CPU")
    parser.add_argument("--tune", action="store_true", help="grid of plaid search settings (held-out seed)")
    parser.add_argument("--name", default=None, help="result file name (default colbert_scale[_gpu])")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    out_name = args.name or ("colbert_scale" if args.device == "cpu" else "colbert_scale_gpu")
    if args.dry_run:
        args.scales, args.queries, args.latency_queries, args.no_corpus = [4096], 8, 4, True
        out_name += "_dry_run"
    gpu = args.device != "cpu"
    if args.tune:
        rows = []
        if not args.no_corpus:
            docs, queries = minilm(args.queries, args.model, seed=args.seed)
            rows += tune(f"python_docs_large (MiniLM) seed {args.seed}", docs, queries, args)
        for scale in args.scales:
            docs, queries = synthetic(int(scale), args.queries, seed=args.seed)
            rows += tune(f"synthetic {int(scale):.0e} seed {args.seed}", docs, queries, args)
        result = {"benchmark": "colbert_scale --tune", "seed": args.seed, "threads": args.threads,
                  "load_average": os.getloadavg(), "machine": machine(), "rows": rows}  # fmt: skip
        path = write_result(args.name or f"colbert_scale_tune_seed{args.seed}", result)
        logger.info("wrote %s", path)
        return
    rows = []
    if not args.no_corpus:
        docs, queries = minilm(args.queries, args.model)
        rows += measure_dataset("python_docs_large (MiniLM, 384-d)", docs, queries, args, args.device, gpu)
        del docs
    for scale in args.scales:
        docs, queries = synthetic(int(scale), args.queries, seed=args.seed)
        rows += measure_dataset(f"synthetic {int(scale):.0e}", docs, queries, args, args.device, gpu)
        if args.dry_run and not gpu:  # the GPU code path (device scan, plaid in torch) on the CPU
            rows += measure_dataset(f"synthetic {int(scale):.0e}", docs, queries, args, "cpu", True)
        del docs
    columns = ("recall@10", "vs dec.", "p50 ms", "p95 ms", "speedup", "build s", "B/vec")
    print(f"{'dataset':36} {'setting':36} " + " ".join(f"{c:>9}" for c in columns))
    for r in rows:
        values = (r["recall@10"], r.get("recall@10_vs_decoded", 1.0), r["p50_ms"], r["p95_ms"],
                  r.get("speedup_p50_vs_flat", 1.0), r["build_s"], r["bytes_per_vector"])  # fmt: skip
        print(f"{r['dataset']:36} {r['setting']:36} " + " ".join(f"{v:>9.3f}" for v in values))
    path = write_result(out_name, {"benchmark": "colbert_scale", "threads": args.threads, "seed": args.seed,
                                   "load_average": os.getloadavg(),
                                   "device": args.device, "machine": machine(), "rows": rows})  # fmt: skip
    logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
