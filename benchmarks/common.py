"""Shared helpers of the benchmark scripts: corpus loading, timing, JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "demo" / "corpus" / "python_docs_large.jsonl"
RESULTS = Path(os.environ.get("VLLM_POOL_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
"""Where result files go (``VLLM_POOL_BENCH_RESULTS`` overrides, e.g. for a dry run)."""


def load_texts(path: Path = CORPUS, limit: int | None = None) -> list[str]:
    """Texts of a JSONL corpus (one ``{"text": ...}`` object per line)."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
            if limit is not None and len(texts) >= limit:
                break
    return texts


def best_of(fn: Callable[[], Any], rounds: int) -> tuple[float, list[float], Any]:
    """Run ``fn`` ``rounds`` times; return (median seconds, all seconds, last result)."""
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def machine() -> dict[str, Any]:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        **cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_model() -> dict[str, Any]:
    """The CPU's model name and the vector-instruction flags that decide fp32 / bf16 speed
    (Linux ``/proc/cpuinfo``; empty elsewhere): machines lent under one name differ."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", ""), "cpu_flags": [f for f in wanted if f in flags]}


def min_cosine(a: Any, b: Any) -> float:
    """The smallest cosine between matching rows of ``a`` and ``b`` (computed in float64)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` as JSON (to a temporary name, then renamed into place)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def flops_per_token(hf_config: Any, mean_len: float) -> float:
    """Forward FLOPs per token of a transformer encoder/decoder (linear layers + attention)."""
    h = int(hf_config.hidden_size)
    inter = int(getattr(hf_config, "intermediate_size", 4 * h) or 4 * h)
    layers = int(hf_config.num_hidden_layers)
    linear = 2 * (4 * h * h + 2 * h * inter)
    attention = 2 * 2 * mean_len * h
    return float(layers * (linear + attention))


def gemm_gflops(
    hidden: int, inter: int, dtype: Any, tokens: int = 2048, seconds: float = 2.0, device: str = "cpu"
) -> float:
    """Measured GFLOP/s of the model's largest GEMM shape ``[tokens, hidden] x [hidden, inter]``.

    On the CPU, the better of ``F.linear`` and the prepacked oneDNN linear the engine uses.
    """
    import torch
    from vllm_pool.engine import cpu_linear

    x = torch.randn(tokens, hidden, device=device).to(dtype)
    linear = torch.nn.Linear(hidden, inter, bias=False).to(device=device, dtype=dtype)
    fns = [linear]
    if device == "cpu" and cpu_linear.available(dtype):
        fns.append(cpu_linear.PackedLinear(linear, tokens))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = 0.0
    with torch.inference_mode():
        for fn in fns:
            for _ in range(3):
                fn(x)
            sync()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                fn(x)
                n += 1
                if n % 64 == 0:
                    sync()
            sync()
            best = max(best, 2 * tokens * hidden * inter * n / (time.perf_counter() - t0) / 1e9)
    return best
