"""Packed vs padded batches on the CPU: the measurement behind the ``packed`` default.

Loads the model twice (``packed=True`` and ``packed=False``) per dtype and times
``LLM.embed`` on the mixed corpus and on short texts (first sentences), rounds interleaved,
in one process. Prints the packed / padded speed ratio per dtype and corpus and the minimum
cosine between the two, and writes ``benchmarks/results/packed_cpu.json``.

    python benchmarks/packed_cpu.py [--limit 1000] [--rounds 3] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse
import logging
import re

import numpy as np
import torch
from vllm_pool.engine.outputs import stack_outputs

from benchmarks.common import CORPUS, best_of, load_texts, machine, min_cosine, write_result


def short_texts(texts: list[str]) -> list[str]:
    """First sentences, at most 120 characters (``embed_throughput.py --short``)."""
    return [re.split(r"(?<=[.!?])\s", t, maxsplit=1)[0][:120] for t in texts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--limit", type=int, default=1000, help="passages to encode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--name", default="packed_cpu", help="result file name")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from vllm_pool import LLM

    mixed = load_texts(args.corpus, args.limit)
    corpora = {"mixed": mixed, "short": short_texts(mixed)}
    rows = []
    for dtype in args.dtypes:
        engines = {
            mode: LLM(args.model, dtype=dtype, device="cpu", packed=mode == "packed")
            for mode in ("packed", "padded")
        }
        assert engines["packed"].runner.packed and not engines["padded"].runner.packed
        for corpus, texts in corpora.items():
            tok = engines["padded"].get_tokenizer()
            tokens = sum(len(ids) for ids in tok(texts, truncation=True, max_length=512)["input_ids"])
            times: dict[str, list[float]] = {"packed": [], "padded": []}
            vectors: dict[str, np.ndarray] = {}
            for llm in engines.values():  # warm-up
                llm.embed(texts[:64], use_tqdm=False, truncate_prompt_tokens=-1)
            for _ in range(args.rounds):
                for mode, llm in engines.items():

                    def run(llm: LLM = llm, texts: list[str] = texts) -> np.ndarray:
                        outs = llm.embed(texts, use_tqdm=False, truncate_prompt_tokens=-1)
                        return stack_outputs(outs).numpy()

                    _, t, vectors[mode] = best_of(run, 1)
                    times[mode] += t
            med = {mode: float(np.median(t)) for mode, t in times.items()}
            row = {
                "dtype": dtype,
                "corpus": corpus,
                "passages": len(texts),
                "tokens": tokens,
                "packed_seconds": med["packed"],
                "padded_seconds": med["padded"],
                "packed_over_padded_speed": med["padded"] / med["packed"],
                "runs": times,
                "min_cosine_packed_vs_padded": min_cosine(vectors["packed"], vectors["padded"]),
            }
            rows.append(row)
            print(
                f"{dtype:9} {corpus:6} packed {med['packed']:7.2f} s  padded {med['padded']:7.2f} s  "
                f"packed/padded speed {row['packed_over_padded_speed']:.2f}x  "
                f"min cosine {row['min_cosine_packed_vs_padded']:.6f}"
            )
    result = {
        "benchmark": "packed_cpu",
        "model": args.model,
        "rounds": args.rounds,
        "rows": rows,
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
    }
    print("->", write_result(args.name, result))


if __name__ == "__main__":
    main()
