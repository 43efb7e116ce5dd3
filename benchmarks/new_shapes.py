"""Calls of sizes the engine has not met yet: packed rows filled to fixed lengths or not.

In bf16 / fp16 on the CPU, oneDNN builds (JIT-compiles) a GEMM kernel for every row count it
meets, so the first batch of each token count costs several times a batch seen before; the
runner therefore fills packed rows up to one of a few lengths (``packing.row_length``). This
benchmark times a series of ``LLM.embed`` calls of random sizes (1 to ``--max-texts`` texts
of the mixed corpus, seeded) three times over: pass 1 meets new token counts, passes 2 and 3
meet them again. Each round runs two fresh processes in alternation, rows filled and not
(kernels are cached for the whole process, so the settings cannot share one). Each process
also times Sentence Transformers (fp32, batch 32, its defaults) on the same calls, once, and
reports the minimum cosine between the two. Prints per-pass seconds and the ratios, and
writes ``benchmarks/results/new_shapes.json``.

    python -m benchmarks.new_shapes [--dtype bfloat16] [--rounds 2] [--calls 60] [--max-texts 40]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import load_texts, machine, min_cosine, write_result

SETTINGS = ("filled", "unfilled")


def child(setting: str, args: argparse.Namespace) -> dict[str, object]:
    """One process's measurement (run with ``--child``)."""
    from sentence_transformers import SentenceTransformer

    from vllm_pool import LLM

    texts = load_texts(limit=3000)
    rng = random.Random(args.seed)
    calls = [rng.sample(texts, rng.randint(1, args.max_texts)) for _ in range(args.calls)]
    llm = LLM(args.model, dtype=args.dtype, device="cpu")
    llm.runner.fill_rows = llm.runner.fill_rows and setting == "filled"
    llm.embed(texts[:8], use_tqdm=False)  # loading work out of the way
    tokenizer = llm.get_tokenizer()
    tokens = sum(len(ids) for call in calls for ids in tokenizer(call, truncation=True)["input_ids"])
    passes = []
    for _ in range(args.passes):
        start = time.perf_counter()
        outs = [llm.embed(call, use_tqdm=False) for call in calls]
        passes.append(time.perf_counter() - start)
    vectors = [o.outputs.embedding for call_outs in outs for o in call_outs]
    st = SentenceTransformer(str(llm.model_config.path), device="cpu")
    st.encode(texts[:8])
    start = time.perf_counter()
    ref = [st.encode(call, batch_size=32, convert_to_numpy=True) for call in calls]
    st_seconds = time.perf_counter() - start
    return {
        "fill_rows": llm.runner.fill_rows,
        "pass_seconds": passes,
        "st_seconds": st_seconds,
        "tokens": tokens,
        "texts": sum(len(call) for call in calls),
        "min_cosine_vs_st": min_cosine(np.array(vectors), np.concatenate(ref)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--dtype", default="bfloat16", help="engine dtype (rows are filled in bf16 / fp16)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=60, help="calls per pass")
    ap.add_argument("--max-texts", type=int, default=40, help="texts per call: 1 to this many")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="new_shapes", help="result file name")
    ap.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            cmd = [sys.executable, "-m", "benchmarks.new_shapes", "--child", setting]
            for key in ("model", "dtype", "calls", "max_texts", "passes", "seed"):
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            runs[setting].append(run)
            passes = ", ".join(f"{s:.2f}" for s in run["pass_seconds"])
            st = run["st_seconds"]
            print(f"round {r + 1} {setting:8s}: passes {passes} s; Sentence Transformers {st:.2f} s")
    summary: dict[str, dict[str, float]] = {}
    for setting in SETTINGS:
        first = statistics.median(run["pass_seconds"][0] for run in runs[setting])
        seen = statistics.median(min(run["pass_seconds"][1:] or run["pass_seconds"]) for run in runs[setting])
        st = statistics.median(run["st_seconds"] for run in runs[setting])
        summary[setting] = {
            "first_pass_s": first,
            "seen_pass_s": seen,
            "first_over_seen": first / seen,
            "st_s": st,
            "speedup_first_pass": st / first,
            "speedup_seen": st / seen,
            "min_cosine_vs_st": min(run["min_cosine_vs_st"] for run in runs[setting]),
        }
        print(
            f"{setting:8s}: first pass {first:.2f} s, seen {seen:.2f} s ({first / seen:.2f}x); "
            f"vs Sentence Transformers {st / first:.2f}x first, {st / seen:.2f}x seen"
        )
    gain = summary["unfilled"]["first_pass_s"] / summary["filled"]["first_pass_s"]
    cost = summary["filled"]["seen_pass_s"] / summary["unfilled"]["seen_pass_s"]
    print(f"filled rows: first pass {gain:.2f}x faster; seen shapes {cost:.2f}x the time of unfilled rows")
    summary["filled_first_pass_gain"] = {"ratio": gain}
    summary["filled_seen_cost"] = {"ratio": cost}
    result = {"machine": machine(), "args": vars(args), "runs": runs, "summary": summary}
    path = write_result(args.name, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
