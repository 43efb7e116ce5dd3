"""`benchmarks/serve_load.py` end to end on a small scale: a real `vllm-pool serve` process,
the light load generator, a warm-up, interleaved server and offline rounds, and the result
file's ratios computed from its own rounds. No timing asserted."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
ROOT = Path(__file__).resolve().parents[2]


def test_serve_load_dry_run(tmp_path):
    env = dict(os.environ, VLLM_POOL_BENCH_RESULTS=str(tmp_path), HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable, "-m", "benchmarks.serve_load", "--servers", "vllm-pool", "--inputs", "short",
        "--concurrency", "4", "--requests", "16", "--rounds", "2", "--warmup", "8", "--name", "dry",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "dry.json").read_text())
    (row,) = result["results"]
    key = (row["server"], row["inputs"], row["concurrency"], row["requests"])
    assert key == ("vllm-pool", "short", 4, 16)
    assert len(row["rps_rounds"]) == 2 and row["rps"] == max(row["rps_rounds"])
    assert row["client_cpu_ms_per_request"] > 0 and row["server_cpu_ms_per_request"] > 0
    offline = result["offline_rounds"]["short/4"]
    assert len(offline) == 2 and result["offline_inputs_per_s"]["short/4"] == max(offline)
    assert result["serve_vs_offline"]["short/4"] == pytest.approx(row["rps"] / max(offline))
    paired = [srv / off for srv, off in zip(row["rps_rounds"], offline)]
    assert result["serve_vs_offline_paired"]["short/4"] == pytest.approx(statistics.median(paired))
    assert result["settings"]["client"] == "light" and result["settings"]["rounds"] == 2
    assert "vllm-pool serve, short inputs, 4 clients:" in proc.stdout


def test_serve_load_runs_under_the_servers_openmp_settings(monkeypatch):
    """The benchmark's offline rounds run under the settings `vllm-pool serve` gives itself."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # importing it leaves this process's env alone
    from benchmarks import serve_load
    from vllm_pool.cli import SERVING_OPENMP

    assert serve_load.SERVING_OPENMP == SERVING_OPENMP
