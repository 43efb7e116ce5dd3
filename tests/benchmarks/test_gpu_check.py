"""`benchmarks/gpu_check.sh`, dry-run on the CPU with a few passages.

The GPU run happens only on a lent GPU machine; this runs the same script end to end
(parity script, both throughput runs, the compute-bound shapes shrunk to 2 x 64, the JSON
summary) so that it cannot rot, and checks the parity it reports: packed batches against
the fp32 padded reference, and every shape against fp32 Sentence Transformers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # the whole script: several model loads (over a minute on a busy 2-core machine)
def test_gpu_check_dry_run_on_cpu(tmp_path):
    env = dict(
        os.environ,
        GPU_CHECK_DEVICE="cpu",
        GPU_CHECK_LIMIT="24",
        GPU_CHECK_ROUNDS="1",
        GPU_CHECK_SHAPES_LIMIT="8",
        GPU_CHECK_SHAPES_ROUNDS="1",
        VLLM_POOL_BENCH_RESULTS=str(tmp_path),
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON line on stdout, the rest on stderr
    report = json.loads(lines[0])["gpu_check"]
    for corpus in ("mixed", "short"):
        row = report[corpus]
        assert row["passages"] == 24 and row["engine_dtype"] == "float32"
        assert row["min_cosine"] >= 0.99999
        assert row["engine_passages_per_s"] > 0 and row["st_passages_per_s"] > 0
    parity = report["parity"]
    assert parity["flash_varlen_kernel"] is False  # no CUDA here
    for model in ("default_model", "tiny_bert", "tiny_xlm_roberta", "tiny_qwen2"):
        assert parity[model]["packed"]["packed"] is True
        assert parity[model]["padded"]["packed"] is False
        for mode in ("packed", "padded"):
            assert parity[model][mode]["embed_min_cosine"] >= 0.99999
            assert parity[model][mode]["token_embed_min_cosine"] >= 0.99999
    shapes = report["shapes"]
    assert set(shapes) == {"minilm", "bert_large", "qwen2_0_5b"}
    assert shapes["bert_large"]["shape"] == "2 x 64" and shapes["qwen2_0_5b"]["shape"] == "2 x 64"
    for row in shapes.values():
        assert row["min_cosine_vs_fp32"] >= 0.99999  # fp32 engine vs fp32 Sentence Transformers
        assert set(row["st_tokens_per_s_by_batch"]) == {"8", "16"} and row["st_best_batch"] in (8, 16)
        assert row["engine_tokens_per_s"] > 0 and 0 < row["share_of_gemm_rate"]
        assert row["first_tokenize_chunk"] is None and row["engine_tokens_per_s_one_chunk"] > 0  # CPU
    assert report["seconds"] >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu_check_mixed.json",
        "gpu_check_short.json",
        "gpu_parity.json",
        "gpu_shapes.json",
    ]
