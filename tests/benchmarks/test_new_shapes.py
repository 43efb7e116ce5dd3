"""`benchmarks/new_shapes.py` on a small scale: both settings' child processes run (rows filled
and not), the result file holds their passes and ratios computed from them. No timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_new_shapes_dry_run(tmp_path):
    env = dict(os.environ, VLLM_POOL_BENCH_RESULTS=str(tmp_path), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "benchmarks.new_shapes", "--rounds", "1", "--calls", "3", "--max-texts", "4"]
    cmd += ["--passes", "2", "--name", "dry"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "dry.json").read_text())
    filled, unfilled = result["runs"]["filled"][0], result["runs"]["unfilled"][0]
    assert filled["fill_rows"] is True and unfilled["fill_rows"] is False  # bf16 on the CPU fills
    for run in (filled, unfilled):
        assert len(run["pass_seconds"]) == 2 and run["st_seconds"] > 0
        assert run["min_cosine_vs_st"] > 0.999  # the engine in bf16 against Sentence Transformers fp32
    gain = unfilled["pass_seconds"][0] / filled["pass_seconds"][0]
    assert result["summary"]["filled_first_pass_gain"]["ratio"] == gain
