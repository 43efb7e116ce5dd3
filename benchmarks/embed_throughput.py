"""Embedding throughput: Sentence Transformers vs ``LLM.embed``, side by side in one process.

Same model, same corpus, same machine. Prints passages/s, tokens/s, the speed ratio and
the minimum cosine between the two, and writes ``benchmarks/results/embed_throughput.json``.

    python benchmarks/embed_throughput.py [--limit 1000] [--rounds 3] [--dtype float32] [--packed off]
"""

from __future__ import annotations

import argparse
import logging
import re

import numpy as np
import torch
from vllm_pool.engine.outputs import stack_outputs

from benchmarks.common import (
    CORPUS,
    best_of,
    flops_per_token,
    gemm_gflops,
    load_texts,
    machine,
    min_cosine,
    peak_rss_mb,
    write_result,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--limit", type=int, default=1000, help="passages to encode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32, help="Sentence Transformers batch size")
    ap.add_argument("--dtype", default="float32", help="engine dtype (float32, bfloat16, float16, auto)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="LLM(compile=True): torch.compile the model")
    ap.add_argument(
        "--packed", choices=["auto", "on", "off"], default="auto", help="packed variable-length batches"
    )
    ap.add_argument("--short", action="store_true", help="short texts: first sentences, <= 32 tokens")
    ap.add_argument("--name", default=None, help="result file name (default: embed_throughput[_dtype])")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from sentence_transformers import SentenceTransformer

    from vllm_pool import LLM

    texts = load_texts(args.corpus, args.limit)
    if args.short:
        texts = [re.split(r"(?<=[.!?])\s", t, maxsplit=1)[0][:120] for t in texts]
    packed = {"auto": None, "on": True, "off": False}[args.packed]
    llm = LLM(args.model, dtype=args.dtype, device=args.device, compile=args.compile, packed=packed)
    device = str(llm.model_config.device)
    dtype_name = str(llm.model_config.dtype).removeprefix("torch.")
    st = SentenceTransformer(str(llm.model_config.path), device=device)
    # the accuracy reference is always fp32 Sentence Transformers (untimed on a GPU, where
    # the timed baseline is Sentence Transformers in fp16)
    fp32_ref = None
    if device.startswith("cuda"):
        fp32_ref = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        st.half()
    n_tokens = sum(
        len(ids)
        for ids in llm.get_tokenizer()(texts, truncation=True, max_length=llm.model_config.max_model_len)[
            "input_ids"
        ]
    )
    lens = sorted(len(ids) for ids in llm.get_tokenizer()(texts)["input_ids"])

    def run_st() -> np.ndarray:
        return st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

    def run_engine() -> np.ndarray:
        outs = llm.embed(texts, use_tqdm=False, truncate_prompt_tokens=-1)
        return stack_outputs(outs).numpy()

    # warm-up on a slice, then alternate full rounds
    st.encode(texts[:64], batch_size=args.batch_size)
    warm = texts[:64] if not args.compile else texts[:400]
    llm.embed(warm, use_tqdm=False, truncate_prompt_tokens=-1)  # compiles when asked
    st_times, eng_times = [], []
    ref = ours = None
    for _ in range(args.rounds):
        _, t, ref = best_of(run_st, 1)
        st_times += t
        _, t, ours = best_of(run_engine, 1)
        eng_times += t
    st_s, eng_s = float(np.median(st_times)), float(np.median(eng_times))
    hc = llm.model_config.hf_config
    gflops = gemm_gflops(hc.hidden_size, hc.intermediate_size, llm.model_config.dtype, device=device)
    fpt = flops_per_token(hc, n_tokens / len(texts))
    ceiling = gflops * 1e9 / fpt  # tokens/s if every FLOP ran at GEMM speed

    result = {
        "benchmark": "embed_throughput",
        "model": args.model,
        "engine_dtype": dtype_name,
        "engine_compiled": args.compile,
        "engine_packed": llm.runner.packed,
        "st_dtype": "float16" if fp32_ref is not None else "float32",
        "short_texts": args.short,
        "device": device,
        "passages": len(texts),
        "tokens": n_tokens,
        "token_length": {"min": lens[0], "median": lens[len(lens) // 2], "max": lens[-1]},
        "st_batch_size": args.batch_size,
        "engine_token_budget": llm.max_num_batched_tokens,
        "sentence_transformers": {
            "seconds": st_s,
            "passages_per_s": len(texts) / st_s,
            "tokens_per_s": n_tokens / st_s,
            "runs": st_times,
        },
        "engine": {
            "seconds": eng_s,
            "passages_per_s": len(texts) / eng_s,
            "tokens_per_s": n_tokens / eng_s,
            "runs": eng_times,
        },
        "speedup": st_s / eng_s,
        "gemm_gflops": gflops,
        "flops_per_token": fpt,
        "gemm_bound_tokens_per_s": ceiling,
        "fraction_of_ceiling": (n_tokens / eng_s) / ceiling,
        "min_cosine": min_cosine(fp32_ref if fp32_ref is not None else ref, ours),  # vs fp32
        "min_cosine_vs_timed_st": min_cosine(ref, ours),
        "machine": machine(),
        "peak_rss_mb": peak_rss_mb(),
    }
    default_name = "embed_throughput" + ("" if dtype_name == "float32" else f"_{dtype_name}")
    default_name += "_padded" if not llm.runner.packed and device == "cpu" else ""  # packed: the default
    default_name += ("_short" if args.short else "") + ("" if device == "cpu" else "_gpu")
    path = write_result(args.name or default_name + ("_compiled" if args.compile else ""), result)
    print(f"{'':24}{'passages/s':>12}{'tokens/s':>12}")
    for key in ("sentence_transformers", "engine"):
        r = result[key]
        print(f"{key:24}{r['passages_per_s']:12.1f}{r['tokens_per_s']:12.0f}")
    print(
        f"GEMM ceiling {ceiling:.0f} tokens/s ({gflops:.0f} GFLOP/s / {fpt / 1e6:.1f} MFLOP per token); "
        f"engine reaches {result['fraction_of_ceiling']:.0%}"
    )
    speed, cos_min = result["speedup"], result["min_cosine"]
    threads = torch.get_num_threads()
    print(f"speedup {speed:.2f}x  min cosine vs fp32 {cos_min:.6f}  ({threads} threads) -> {path}")


if __name__ == "__main__":
    main()
