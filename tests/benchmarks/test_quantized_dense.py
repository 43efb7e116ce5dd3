"""`benchmarks/quantized_dense.py --fake`: the whole script on random vectors (no engine).
No timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quantized_dense_dry_run(tmp_path):
    env = dict(os.environ, VLLM_POOL_BENCH_RESULTS=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "benchmarks/quantized_dense.py", "--fake", "--synthetic", "1000", "--name", "dry"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "dry.json").read_text())
    for part in ("corpus", "synthetic"):
        rows = result[part]["rows"]
        assert [(r["storage"], r["rescore"]) for r in rows][:2] == [("fp32", None), ("int8", "codes")]
        assert all(0.0 <= r["recall@10"] <= 1.0 for r in rows) and rows[0]["recall@10"] == 1.0
        binary = [r for r in rows if r["storage"] == "binary"]
        assert {r["vector_bytes"] for r in binary} == {384 // 8}
        floats = [r["recall@10"] for r in binary if r["rescore"] == "float"]
        assert floats == sorted(floats)  # more candidates, exact scores: never worse
