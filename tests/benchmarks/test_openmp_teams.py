"""`benchmarks/openmp_teams.py` on a small scale: both settings' child processes run, the
result file holds their rounds and ratios computed from them. No timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_openmp_teams_dry_run(tmp_path):
    env = dict(os.environ, VLLM_POOL_BENCH_RESULTS=str(tmp_path), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "benchmarks.openmp_teams", "--rounds", "1", "--queries", "4", "--build", "8"]
    cmd += ["--name", "dry"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "dry.json").read_text())
    assert set(result["runs"]) == {"release", "keep"}
    for key in ("async_p50_ms", "main_p50_ms"):
        release, keep = result["runs"]["release"][0][key], result["runs"]["keep"][0][key]
        assert release > 0 and keep > 0
        assert result["summary"][key]["keep_over_release"] == keep / release
