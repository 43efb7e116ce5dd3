"""One short query at a time after a start-up build on the main thread, with and without the
release of the main thread's OpenMP team (``engine.model_thread.release_team``).

The pattern of an application that builds its index at start-up and then answers queries from
other threads (an async web app calling ``aembed_query``, a thread pool): the model's calls
from those threads run on the model thread, and a team left on the main thread by the build
stops GNU OpenMP's workers from spinning between a forward pass's parallel regions. Each
round runs two fresh processes, one per setting, in alternation (a team, once made, lasts as
long as its thread, so the settings cannot share a process). Each process embeds the start-up
texts on its main thread, then times one-text ``LLM.embed`` calls made through
``asyncio.to_thread`` (the async path) and, after them, the same calls on the main thread
(the script path, where the release must not cost). Prints the medians and their ratios and
writes ``benchmarks/results/openmp_teams.json``.

    python -m benchmarks.openmp_teams [--rounds 3] [--queries 300] [--build 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

from benchmarks.common import load_texts, machine, write_result

SETTINGS = ("release", "keep")


def child(setting: str, model: str, build: int, queries: int) -> dict[str, float]:
    """One process's measurement (run with ``--child``): medians in milliseconds."""
    from vllm_pool.engine import model_thread

    from vllm_pool import LLM

    if setting == "keep":  # the behaviour before the release: teams stay
        model_thread.release_team = lambda: False
    texts = load_texts(limit=max(build, queries + 20))
    short = [t[:100] for t in texts]
    llm = LLM(model, device="cpu")
    llm.embed(texts[:build], use_tqdm=False)  # the start-up build, on the main thread

    def one(text: str) -> float:
        start = time.perf_counter()
        llm.embed([text], use_tqdm=False)
        return time.perf_counter() - start

    async def from_threads() -> list[float]:
        for text in short[:20]:
            await asyncio.to_thread(one, text)  # warm-up
        return [await asyncio.to_thread(one, text) for text in short[20 : 20 + queries]]

    async_times = asyncio.run(from_threads())
    main_times = [one(text) for text in short[20 : 20 + queries]]
    return {
        "async_p50_ms": statistics.median(async_times) * 1e3,
        "main_p50_ms": statistics.median(main_times) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=300, help="one-text calls timed per path")
    ap.add_argument("--build", type=int, default=300, help="texts embedded at start-up")
    ap.add_argument("--name", default="openmp_teams", help="result file name")
    ap.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.build, args.queries)))
        return

    runs: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            cmd = [sys.executable, "-m", "benchmarks.openmp_teams", "--child", setting, "--model", args.model]
            cmd += ["--build", str(args.build), "--queries", str(args.queries)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[setting].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1} {setting:7s}: {runs[setting][-1]}", flush=True)
    summary = {}
    for key in ("async_p50_ms", "main_p50_ms"):
        medians = {s: statistics.median(run[key] for run in runs[s]) for s in SETTINGS}
        pairs = zip(runs["release"], runs["keep"], strict=True)
        paired = statistics.median(k[key] / r[key] for r, k in pairs)
        ratio = medians["keep"] / medians["release"]
        summary[key] = {**medians, "keep_over_release": ratio, "paired": paired}
        print(
            f"{key}: release {medians['release']:.2f} ms, keep {medians['keep']:.2f} ms "
            f"({summary[key]['keep_over_release']:.2f}x; paired rounds {paired:.2f}x)"
        )
    result = {"machine": machine(), "args": vars(args), "runs": runs, "summary": summary}
    path = write_result(args.name, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
