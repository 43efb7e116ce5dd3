"""Retrieval quality on the demo questions: dense vs ColBERT (all-MiniLM-L6-v2 token vectors).

Indexes ``demo/corpus/python_docs.jsonl`` (the demo corpus) once per system and asks the 30
questions of ``demo/corpus/queries.jsonl``. A hit is a passage of the expected module (what
``demo/rag.py`` counts) or, stricter, a passage whose title is one of the relevant titles.
Systems: dense (``embed`` + flat inner product), ColBERT with the default settings of a plain
model (no ``[MASK]`` query expansion), and ColBERT with expansion (attended, the old default;
and unattended, colbert-ai's), and the default with long passages split into windows.
Writes ``benchmarks/results/colbert_quality.json``.

    python benchmarks/colbert_quality.py
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

try:
    from benchmarks.common import RESULTS, ROOT, machine
except ImportError:  # run as a script
    from common import RESULTS, ROOT, machine  # type: ignore[no-redef]

CORPUS = ROOT / "demo" / "corpus" / "python_docs.jsonl"
QUERIES = ROOT / "demo" / "corpus" / "queries.jsonl"
COLBERT_VARIANTS = {
    "colbert (default: no expansion)": {},
    "colbert + [MASK] expansion, attended": {"mask_augment": True, "attend_to_expansion_tokens": True},
    "colbert + [MASK] expansion, unattended": {"mask_augment": True},
}


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _metrics(ranked: list[list[str]], passages: dict[str, dict], questions: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in (1, 3, 10):
        module = [any(passages[d]["module"] == q["module"] for d in r[:k]) for r, q in zip(ranked, questions)]
        out[f"module_hit@{k}"] = float(np.mean(module))
    title = [
        any(passages[d]["title"] in q["relevant_titles"] for d in r[:3]) for r, q in zip(ranked, questions)
    ]
    out["title_hit@3"] = float(np.mean(title))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=RESULTS / "colbert_quality.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from vllm_pool.retrievers import (
        ColBERTEncoder,
        DenseIndex,
        EngineTextEmbedder,
        EngineTokenEncoder,
        MultiVectorIndex,
        long_documents,
    )

    from vllm_pool import LLM

    passages = _jsonl(CORPUS)
    questions = _jsonl(QUERIES)
    by_id = {p["id"]: p for p in passages}
    texts, ids = [p["text"] for p in passages], [p["id"] for p in passages]
    queries = [q["query"] for q in questions]
    llm = LLM(args.model)
    results: dict[str, dict] = {}

    t0 = time.perf_counter()
    embedder = EngineTextEmbedder(llm)
    dense = DenseIndex.from_texts(texts, embedder, ids=ids)
    ranked = [[h.id for h in hits] for hits in dense.search(embedder.embed_texts(queries), k=10)]
    results["dense"] = {**_metrics(ranked, by_id, questions), "seconds": time.perf_counter() - t0}

    tokens = EngineTokenEncoder(llm)
    doc_vectors = None
    for name, overrides in COLBERT_VARIANTS.items():
        t0 = time.perf_counter()
        enc = ColBERTEncoder(tokens, ColBERTEncoder.default_config(tokens, **overrides))
        if doc_vectors is None:  # documents are encoded the same way by every variant
            doc_vectors = enc.encode_documents(texts)
        index = MultiVectorIndex.from_vectors(doc_vectors, ids=ids)
        ranked = [[h.id for h in hits] for hits in index.search(enc.encode_queries(queries), k=10)]
        results[name] = {
            **_metrics(ranked, by_id, questions),
            "settings": enc.config.to_settings(),
            "seconds": time.perf_counter() - t0,
        }

    t0 = time.perf_counter()  # the default settings, long passages split into windows
    enc = ColBERTEncoder(tokens)
    index = MultiVectorIndex(llm.embedding_dim)
    long_documents.add_documents(index, enc, texts, ids, [{}] * len(ids), overlap=32)
    hits = long_documents.search(index, enc.encode_queries(queries), k=10)
    ranked = [[h.id for h in row] for row in hits]
    results["colbert (default) + split_long_documents"] = {
        **_metrics(ranked, by_id, questions),
        "settings": enc.config.to_settings(),
        "seconds": time.perf_counter() - t0,
    }

    width = max(len(n) for n in results)
    print(f"{len(questions)} questions over {len(passages)} passages ({args.model})")
    print(f"{'system':<{width}}  module hit@1  hit@3  hit@10  title hit@3")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['module_hit@1']:12.2f}  {r['module_hit@3']:5.2f}  "
              f"{r['module_hit@10']:6.2f}  {r['title_hit@3']:11.2f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model, "passages": len(passages), "questions": len(questions),
               "machine": machine(), "results": results}  # fmt: skip
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
