"""`benchmarks/gpu_bundle.py`: what `gpu_check.sh` uses on a bare GPU machine (no pip, no hub).

The packed default model must come back as a working fp32 folder that Sentence Transformers
and the engine both load (the same network, weights rounded to fp16), readable by any user,
and `source` must lay the package out so that a plain interpreter imports it from there.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_pack_unpack_round_trip(tmp_path):
    from sentence_transformers import SentenceTransformer

    from benchmarks.gpu_bundle import WEIGHTS, pack, unpack
    from vllm_pool import LLM

    packed, model = tmp_path / "minilm16", tmp_path / "minilm"
    pack(packed)
    unpack(packed, model)
    assert (packed / WEIGHTS).stat().st_size < 50e6  # fits a device call's 64 MiB carry
    for folder in (packed, model):
        assert stat.S_IMODE((folder / WEIGHTS).stat().st_mode) == 0o644
    texts = ["How do I parse JSON?", "A much longer passage about the json module and its loads function."]
    st = SentenceTransformer(str(model), device="cpu").encode(texts, normalize_embeddings=True)
    ours = np.array([o.outputs.embedding for o in LLM(str(model)).embed(texts, use_tqdm=False)])
    np.testing.assert_allclose(ours, st, atol=2e-5)


def test_source_layout_imports_without_pip(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "benchmarks.gpu_bundle", "source", str(site)], cwd=ROOT, check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import vllm_pool.engine.server.connections as c, vllm_pool.retrievers as r\n"
    code += "print(c.__file__, r.__file__)"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in out), out
