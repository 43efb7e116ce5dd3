"""Embedding a corpus on Ray Data (1 and 2 CPU actors) against in-process ``LLM.embed``, in one process.

The same texts go through ``LLM.embed`` in this process (every core) and through
``map_pooling`` on a local Ray cluster started here, with each actor layout in turn. Each Ray
job is timed end to end (actors start, load the engine, embed, results reach the driver),
and a second job over a handful of rows measures the fixed start-up part, so the steady rate
is reported too. Prints rows/s and ratios and writes ``benchmarks/results/ray_embed.json``.

    python -m benchmarks.ray_embed [--limit 3000] [--layouts 1x2,2x1] [--rounds 1]

A layout ``AxC`` is A actors of C CPUs each; ``--num-gpus 1`` gives each actor a GPU (the
GPU recipe: one actor per GPU, ``--layouts 4x1 --num-gpus 1`` on a 4-GPU node).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time

import numpy as np

from benchmarks.common import CORPUS, best_of, load_texts, machine, min_cosine, peak_rss_mb, write_result


def _layouts(spec: str) -> list[tuple[int, float]]:
    out = []
    for part in spec.split(","):
        actors, cpus = part.lower().split("x")
        out.append((int(actors), float(cpus)))
    return out


def _ray_job(ray, texts: list[str], model: str, actors: int, cpus: float, gpus: float, batch_size: int):
    """One ``map_pooling`` job, timed from the dataset's creation to the vectors on the driver."""
    import pyarrow as pa
    from vllm_pool.integrations.ray import map_pooling
    from vllm_pool.integrations.ray.columns import column_matrix

    t0 = time.perf_counter()
    items = [{"i": i, "text": t} for i, t in enumerate(texts)]
    ds = ray.data.from_items(items, override_num_blocks=4 * actors)
    out = map_pooling(ds, model, task="embed", concurrency=actors, num_cpus=cpus, num_gpus=gpus,
                      batch_size=batch_size).materialize()  # fmt: skip
    table = pa.concat_tables(ray.get(out.to_arrow_refs()))
    seconds = time.perf_counter() - t0
    order = np.argsort(table["i"].to_numpy())
    return seconds, column_matrix(table["embedding"], "embedding")[order]


def _threads(ray, cpus: float) -> int:
    """torch's thread count in a new Ray actor of ``cpus`` CPUs (Ray sets OMP_NUM_THREADS)."""

    @ray.remote(num_cpus=cpus)
    class Probe:
        def threads(self) -> int:
            import torch

            return torch.get_num_threads()

    probe = Probe.remote()
    try:
        return int(ray.get(probe.threads.remote()))
    finally:
        ray.kill(probe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--limit", type=int, default=3000, help="texts to embed")
    ap.add_argument("--long", action="store_true", help="whole passages instead of first sentences")
    ap.add_argument("--layouts", default="1x2,2x1", help="actors x CPUs per actor, comma separated")
    ap.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (0: CPU actors)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    ap.add_argument("--batch-size", type=int, default=256, help="rows per map_batches call")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of each measurement (median)")
    ap.add_argument("--name", default="ray_embed", help="result file name")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from vllm_pool import LLM

    load_before = os.getloadavg()
    texts = load_texts(args.corpus, args.limit)
    if not args.long:
        texts = [re.split(r"(?<=[.!?])\s", t, maxsplit=1)[0][:120] for t in texts]
    llm = LLM(args.model)
    tokens = sum(len(ids) for ids in llm.get_tokenizer()(texts)["input_ids"])

    def in_process():
        outs = llm.embed(texts, use_tqdm=False, truncate_prompt_tokens=-1)  # ST cuts to max_seq_length
        return np.asarray([o.outputs.embedding for o in outs], dtype=np.float32)

    layouts = _layouts(args.layouts)
    num_cpus = args.num_cpus or os.cpu_count()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    local_runs: list[float] = []
    runs: dict[int, list[float]] = {i: [] for i in range(len(layouts))}
    startup: dict[int, list[float]] = {i: [] for i in range(len(layouts))}
    vectors: dict[int, np.ndarray] = {}
    try:
        for _ in range(args.rounds):  # alternate, so that a busy moment of the machine hits every row
            _, t, ref = best_of(in_process, 1)
            local_runs += t
            for i, (actors, cpus) in enumerate(layouts):
                job = (args.model, actors, cpus, args.num_gpus, args.batch_size)
                seconds, vectors[i] = _ray_job(ray, texts, *job)
                runs[i].append(seconds)
                startup[i].append(_ray_job(ray, texts[: 2 * actors], *job)[0])
        threads = [_threads(ray, cpus) for _, cpus in layouts]
    finally:
        ray.shutdown()
    local_s = float(np.median(local_runs))
    result = {
        "benchmark": "ray_embed",
        "model": args.model,
        "rows": len(texts),
        "tokens": tokens,
        "short_texts": not args.long,
        "batch_size": args.batch_size,
        "in_process": {"seconds": local_s, "rows_per_s": len(texts) / local_s, "runs": local_runs},
        "ray": [],
    }
    for i, (actors, cpus) in enumerate(layouts):
        total_s, start_s = float(np.median(runs[i])), float(np.median(startup[i]))
        row = {
            "actors": actors,
            "cpus_per_actor": cpus,
            "gpus_per_actor": args.num_gpus,
            "torch_threads_per_actor": threads[i],
            "seconds": total_s,
            "rows_per_s": len(texts) / total_s,
            "startup_seconds": start_s,
            "steady_rows_per_s": len(texts) / max(total_s - start_s, 1e-9),
            "vs_in_process": local_s / total_s,
            "steady_vs_in_process": local_s / max(total_s - start_s, 1e-9),
            "min_cosine_vs_in_process": min_cosine(ref, vectors[i]),
            "runs": runs[i],
            "startup_runs": startup[i],
        }
        result["ray"].append(row)
        print(f"{actors} actor(s) x {cpus:g} CPU: {row['rows_per_s']:.1f} rows/s end to end "
              f"({row['vs_in_process']:.2f}x in-process), {row['steady_rows_per_s']:.1f} rows/s after "
              f"{start_s:.1f}s start-up ({row['steady_vs_in_process']:.2f}x), "
              f"min cosine {row['min_cosine_vs_in_process']:.6f}")  # fmt: skip
    result["machine"] = machine()
    result["load_average_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}  # a shared machine
    result["peak_rss_mb"] = peak_rss_mb()
    print(f"in process: {result['in_process']['rows_per_s']:.1f} rows/s ({len(texts)} rows, {tokens} tokens)")
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
