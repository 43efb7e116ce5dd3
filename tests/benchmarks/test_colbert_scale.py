"""`benchmarks/colbert_scale.py --dry-run`: the whole script at a tiny size, the GPU code
path (device scan, PLAID in torch) included with the CPU as the device. No timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_colbert_scale_dry_run(tmp_path):
    env = dict(os.environ, VLLM_POOL_BENCH_RESULTS=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.colbert_scale", "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "colbert_scale_dry_run.json").read_text())["rows"]
    settings = [r["setting"] for r in rows]
    assert settings == [
        "flat (exact, fp32)", "plaid nbits=1", "plaid nbits=2",
        "flat (exact scan, float32 on cpu)", "plaid nbits=1", "plaid nbits=2",
    ]  # fmt: skip
    for r in rows:
        assert r["token_vectors"] == 4096 and r["p50_ms"] > 0 and r["peak_rss_mb"] > 0
        assert 0.0 <= r["recall@10"] <= 1.0
    assert rows[0]["recall@10"] == rows[3]["recall@10"] == 1.0  # both exact scans equal fp32 MaxSim
    assert rows[0]["bytes_per_vector"] == 512  # 128-d fp32
    assert rows[2]["bytes_per_vector"] < rows[0]["bytes_per_vector"] / 4
    for r in rows[1:3] + rows[4:]:  # plaid: the search's own loss, separated from the codec's
        assert 0.0 <= r["recall@10_vs_decoded"] <= 1.0 and r["speedup_p50_vs_flat"] > 0
        assert r["ndocs"] is None and r["centroids"] > 0


def test_colbert_scale_tune_grid(tmp_path):
    env = dict(os.environ, VLLM_POOL_BENCH_RESULTS=str(tmp_path))
    args = ["--tune", "--seed", "1", "--scales", "2048", "--queries", "4", "--latency-queries", "2"]
    args += ["--nbits", "2", "--no-corpus"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.colbert_scale", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "colbert_scale_tune_seed1.json").read_text())
    assert result["seed"] == 1 and len(result["rows"]) == 3 * 4 * 3  # ncells x threshold x ndocs
    for r in result["rows"]:
        assert 0.0 <= r["recall@10"] <= 1.0 and 0.0 <= r["recall@10_vs_decoded"] <= 1.0
