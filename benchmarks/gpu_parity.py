"""GPU parity: the engine's GPU default (half precision, packed batches through Flash
Attention's variable-length kernel) against fp32 padded runs of the same weights.

Models: the default bi-encoder, and tiny random BERT, XLM-RoBERTa (positions after the
padding id) and Qwen2 (causal, grouped-query attention) built on the spot. For each:
minimum cosine of ``embed`` and of every ``token_embed`` vector, half-precision packed and
half-precision padded, against fp32 padded. Prints one JSON line and writes
``benchmarks/results/gpu_parity.json``.

    python -m benchmarks.gpu_parity [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import ROOT, load_texts, machine, min_cosine, write_result


def _outputs(llm: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    outs = llm.embed(texts, use_tqdm=False, truncate_prompt_tokens=-1)  # ST cuts to max_seq_length
    emb = np.array([o.outputs.embedding for o in outs], dtype=np.float32)
    toks = llm.encode(texts, pooling_task="token_embed", use_tqdm=False, truncate_prompt_tokens=-1)
    return emb, np.concatenate([np.asarray(o.outputs.data, dtype=np.float32) for o in toks])


def check(path: str, texts: list[str], device: str) -> dict[str, Any]:
    from vllm_pool import LLM

    ref = _outputs(LLM(path, device=device, dtype="float32", packed=False), texts)
    row: dict[str, Any] = {}
    for name, packed in (("packed", True), ("padded", False)):
        llm = LLM(path, device=device, packed=packed)  # dtype auto: bf16 or fp16
        emb, toks = _outputs(llm, texts)
        row[name] = {
            "dtype": str(llm.model_config.dtype).replace("torch.", ""),
            "packed": llm.runner.packed,
            "embed_min_cosine": min_cosine(emb, ref[0]),
            "token_embed_min_cosine": min_cosine(toks, ref[1]),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, default=500)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    import tiny_models
    from vllm_pool.engine import packing

    texts = load_texts(limit=args.limit)
    probe = torch.zeros(1, device=args.device, dtype=torch.bfloat16)
    result: dict[str, Any] = {"flash_varlen_kernel": packing.flash_kernel(probe) is not None}
    result["default_model"] = check(args.model, texts, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (
            ("tiny_bert", tiny_models.bert),
            ("tiny_xlm_roberta", tiny_models.xlm_roberta),
            ("tiny_qwen2", tiny_models.qwen2),
        ):
            result[name] = check(str(build(Path(tmp) / name)), tiny_models.TEXTS, args.device)
    result["machine"] = machine()
    write_result("gpu_parity", result)
    print(json.dumps({"gpu_parity": {k: v for k, v in result.items() if k != "machine"}}))


if __name__ == "__main__":
    main()
