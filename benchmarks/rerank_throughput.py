"""Reranking: ``score`` over 100 candidate passages per query, vs Sentence Transformers.

Two models, side by side in one process:

- a cross-encoder: a randomly initialised BERT the size of all-MiniLM-L6-v2 with one label
  (built here and saved to a temporary folder; random weights cost the same as trained ones),
  ``CrossEncoder.predict`` vs ``LLM.score``;
- the bi-encoder all-MiniLM-L6-v2: ``encode`` + cosine vs ``LLM.score`` (embed fallback).

Writes ``benchmarks/results/rerank_throughput.json``.

    python -m benchmarks.rerank_throughput [--queries 8] [--candidates 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import CORPUS, ROOT, best_of, load_texts, machine, write_result

CUT = {"use_tqdm": False, "truncate_prompt_tokens": -1}  # the references cut to the model's limit


def build_cross_encoder(base: Path, folder: Path) -> Path:
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(base)
    cfg.num_labels = 1
    cfg.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def compare(name, run_st, run_engine, rounds, pairs):
    run_st(), run_engine()
    st_t, eng_t = [], []
    for _ in range(rounds):
        _, t, ref = best_of(run_st, 1)
        st_t += t
        _, t, ours = best_of(run_engine, 1)
        eng_t += t
    st_s, eng_s = statistics.median(st_t), statistics.median(eng_t)
    diff = float(np.max(np.abs(np.asarray(ref, dtype=np.float64) - np.asarray(ours, dtype=np.float64))))
    print(
        f"{name:14} ST {pairs / st_s:8.1f} pairs/s  engine {pairs / eng_s:8.1f} pairs/s  "
        f"speedup {st_s / eng_s:.2f}x  max |diff| {diff:.2e}"
    )
    return {"st_pairs_per_s": pairs / st_s, "engine_pairs_per_s": pairs / eng_s, "speedup": st_s / eng_s,
            "max_abs_diff": diff, "st_runs": st_t, "engine_runs": eng_t}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from sentence_transformers import CrossEncoder, SentenceTransformer

    from vllm_pool import LLM

    queries = [json.loads(line)["query"] for line in open(ROOT / "demo/corpus/queries.jsonl")][: args.queries]
    docs = load_texts(CORPUS, args.candidates)
    pairs = len(queries) * len(docs)
    results = {}
    bi = LLM("sentence-transformers/all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory() as tmp:
        ce_dir = build_cross_encoder(bi.model_config.path, Path(tmp) / "ce")
        ce_llm = LLM(str(ce_dir))
        ce_st = CrossEncoder(str(ce_dir), device="cpu")
        results["cross_encoder"] = compare(
            "cross-encoder",
            lambda: np.concatenate([ce_st.predict([(q, d) for d in docs], batch_size=32) for q in queries]),
            lambda: [o.outputs.score for q in queries for o in ce_llm.score(q, docs, **CUT)],
            args.rounds,
            pairs,
        )
    st = SentenceTransformer(str(bi.model_config.path), device="cpu")

    def st_bi():  # each query reranks its own candidates, as in a RAG pipeline
        out = []
        for q in queries:
            emb = st.encode([q, *docs], batch_size=32, convert_to_tensor=True)
            out.append(torch.nn.functional.cosine_similarity(emb[:1], emb[1:]).numpy())
        return np.concatenate(out)

    results["bi_encoder"] = compare(
        "bi-encoder", st_bi,
        lambda: [o.outputs.score for q in queries for o in bi.score(q, docs, **CUT)],
        args.rounds, pairs,
    )  # fmt: skip
    results.update(queries=len(queries), candidates=len(docs), machine=machine())
    print("->", write_result("rerank_throughput", {"benchmark": "rerank_throughput", **results}))


if __name__ == "__main__":
    main()
