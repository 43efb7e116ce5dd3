"""Token-level embeddings: Sentence Transformers (``output_value="token_embeddings"``) vs
``LLM.encode(pooling_task="token_embed")``, side by side in one process.

Writes ``benchmarks/results/token_embed_throughput.json``.

    python -m benchmarks.token_embed_throughput [--limit 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import CORPUS, best_of, load_texts, machine, peak_rss_mb, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    from vllm_pool import LLM, PoolingParams

    texts = load_texts(args.corpus, args.limit)
    llm = LLM(args.model, dtype=args.dtype)
    st = SentenceTransformer(str(llm.model_config.path), device=str(llm.model_config.device))
    raw = PoolingParams(normalize=False)  # ST returns raw token embeddings

    def run_st():
        return st.encode(texts, batch_size=32, output_value="token_embeddings", convert_to_tensor=False)

    def run_engine():
        kw = {"use_tqdm": False, "truncate_prompt_tokens": -1}  # ST cuts to max_seq_length
        return [o.outputs.data for o in llm.encode(texts, raw, pooling_task="token_embed", **kw)]

    run_st(), run_engine()  # warm-up
    st_times, eng_times = [], []
    for _ in range(args.rounds):
        _, t, ref = best_of(run_st, 1)
        st_times += t
        _, t, ours = best_of(run_engine, 1)
        eng_times += t
    n_tokens = sum(int(x.shape[0]) for x in ours)
    cos = min(
        float(torch.nn.functional.cosine_similarity(a, torch.as_tensor(b), dim=-1).min())
        for a, b in zip(ours, ref)
    )
    same_shapes = all(tuple(a.shape) == tuple(torch.as_tensor(b).shape) for a, b in zip(ours, ref))
    st_s, eng_s = statistics.median(st_times), statistics.median(eng_times)
    result = {
        "benchmark": "token_embed_throughput",
        "model": args.model,
        "engine_dtype": args.dtype,
        "passages": len(texts),
        "tokens": n_tokens,
        "sentence_transformers": {"seconds": st_s, "tokens_per_s": n_tokens / st_s, "runs": st_times},
        "engine": {"seconds": eng_s, "tokens_per_s": n_tokens / eng_s, "runs": eng_times},
        "speedup": st_s / eng_s,
        "min_token_cosine": cos,
        "same_shapes": same_shapes,
        "machine": machine(),
        "peak_rss_mb": peak_rss_mb(),
    }
    path = write_result("token_embed_throughput", result)
    print(f"ST {n_tokens / st_s:.0f} tokens/s, engine {n_tokens / eng_s:.0f} tokens/s")
    print(
        f"speedup {result['speedup']:.2f}x  min token cosine {cos:.6f}  shapes equal {same_shapes} -> {path}"
    )


if __name__ == "__main__":
    main()
