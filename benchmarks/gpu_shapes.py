"""Compute-bound shapes on a GPU: ``LLM.embed`` against Sentence Transformers at its best batch.

The models people deploy for RAG are compute-bound, unlike all-MiniLM-L6-v2. This builds
two of their shapes from random weights on the device (nothing is downloaded) and runs the
same passages through both sides:

* ``bert_large``: 24 layers x 1024 (16 heads, FFN 4096), mean pooling (bge-large / e5-large);
* ``qwen2_0_5b``: 24 layers x 896 (14 query heads, 2 key/value heads, gated FFN 4864),
  last-token pooling (gte-Qwen / Qwen3 embedding);
* ``minilm``: the default model itself (``--model``), for the best-batch comparison.

Both shapes use the default model's WordPiece tokenizer, so passages have realistic
lengths. Per model it reports: end-to-end ``LLM.embed`` tokens/s (dtype auto: bf16 on a
GPU, packed), the same with the whole input tokenized before the first batch (rounds
interleaved; ``engine_tokens_per_s_one_chunk``: what starting the device on a first chunk
of ``LLM.first_tokenize_chunk`` prompts gains), the share of the measured bf16 GEMM rate
that represents (forward FLOPs per token x tokens/s / GEMM FLOP/s), Sentence Transformers
fp16 at each batch size tried and at its best, and the minimum cosine against fp32
Sentence Transformers on the same weights.
Writes ``benchmarks/results/gpu_shapes.json`` and prints one JSON line.

    python -m benchmarks.gpu_shapes --model PATH [--device cuda] [--limit 2000] [--rounds 3]

``--dry`` shrinks the shapes to 2 layers x 64 so the same steps run on a CPU (the tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import gemm_gflops, load_texts, machine, min_cosine, write_result

SHAPES: dict[str, dict[str, Any]] = {
    "bert_large": dict(
        arch="bert", layers=24, hidden=1024, heads=16, kv_heads=16, inter=4096, pooling="mean"
    ),
    "qwen2_0_5b": dict(
        arch="qwen2", layers=24, hidden=896, heads=14, kv_heads=2, inter=4864, pooling="lasttoken"
    ),
}
DRY = dict(layers=2, hidden=64, heads=4, inter=128)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def build_shape(name: str, tokenizer_dir: Path, folder: Path, device: str, dry: bool) -> Path:
    """A Sentence Transformers folder with random weights of shape ``name`` (initialized on ``device``)."""
    import transformers

    shape = dict(SHAPES[name])
    if dry:
        shape.update(DRY, kv_heads=2 if shape["arch"] == "qwen2" else DRY["heads"])
    folder.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        if (tokenizer_dir / f).exists():
            shutil.copy(tokenizer_dir / f, folder / f)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    common = dict(
        vocab_size=len(tok),
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["inter"],
        pad_token_id=tok.pad_token_id or 0,
    )
    if shape["arch"] == "bert":
        config: Any = transformers.BertConfig(max_position_embeddings=512, **common)
        cls: Any = transformers.BertModel
    else:
        config = transformers.Qwen2Config(
            num_key_value_heads=shape["kv_heads"],
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            eos_token_id=tok.sep_token_id,
            **common,
        )
        cls = transformers.Qwen2ForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(config).eval()
    # fp16 weights: half the bytes to write; every side loads this same (rounded) network
    model.to(torch.float16 if not dry else torch.float32).save_pretrained(folder, safe_serialization=True)
    del model
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    st_config = {"max_seq_length": 512, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(st_config))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    modes = (
        "cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"
    )  # fmt: skip
    chosen = {"mean": "mean_tokens", "lasttoken": "lasttoken"}[shape["pooling"]]
    pooling: dict[str, Any] = {f"pooling_mode_{m}": m == chosen for m in modes}
    pooling.update(word_embedding_dimension=shape["hidden"], include_prompt=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder


def flops_per_token(hf_config: Any, lengths: list[int]) -> float:
    """Forward FLOPs per token: the linear layers (grouped-query K/V, gated FFN) plus attention.

    Attention costs ``4 x length x hidden`` per token of a prompt of ``length`` tokens; the
    token-weighted mean length (sum of squares over sum) accounts for it exactly.
    """
    h = int(hf_config.hidden_size)
    inter = int(hf_config.intermediate_size)
    heads = int(hf_config.num_attention_heads)
    kv = int(getattr(hf_config, "num_key_value_heads", heads) or heads) * (h // heads)
    gated = getattr(hf_config, "model_type", "") not in ("bert", "roberta", "xlm-roberta")
    linear = 2 * (2 * h * h + 2 * h * kv + (3 if gated else 2) * h * inter)
    mean_len = sum(n * n for n in lengths) / max(sum(lengths), 1)
    return float(int(hf_config.num_hidden_layers) * (linear + 4 * mean_len * h))


def run_model(
    name: str, path: Path, texts: list[str], device: str, rounds: int, batch_sizes: list[int]
) -> dict[str, Any]:
    """Engine vs Sentence Transformers (fp16 on a GPU) on ``path``; fp32 ST is the accuracy reference."""
    from sentence_transformers import SentenceTransformer
    from vllm_pool.engine.outputs import stack_outputs

    from vllm_pool import LLM

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    st = SentenceTransformer(str(path), device=device).float()
    ref = st.encode(texts, batch_size=64, convert_to_numpy=True)  # fp32 reference, untimed
    if cuda:
        st.half()
    st.encode(texts[:64], batch_size=32)  # warm-up
    st_runs: dict[int, float] = {}
    for bs in batch_sizes:
        sync()
        t0 = time.perf_counter()
        st.encode(texts, batch_size=bs, convert_to_numpy=True)
        sync()
        st_runs[bs] = time.perf_counter() - t0
    best_bs = min(st_runs, key=lambda b: st_runs[b])
    st = None  # free its memory before the engine loads
    if cuda:
        torch.cuda.empty_cache()

    llm = LLM(str(path), device=device)  # dtype auto: bf16 / fp16 on a GPU, fp32 on a CPU
    tok = llm.get_tokenizer()
    limit = llm.model_config.max_model_len
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=limit)["input_ids"]]
    n_tokens = sum(lengths)
    llm.embed(texts[:256], use_tqdm=False, truncate_prompt_tokens=-1)  # warm-up (kernels, allocator)
    first_chunk = llm.first_tokenize_chunk
    times, one_chunk, ours = [], [], None
    for _ in range(rounds):  # the default, then the whole input tokenized before the first batch
        for schedule, runs in ((first_chunk, times), (None, one_chunk)):
            llm.first_tokenize_chunk = schedule
            sync()
            t0 = time.perf_counter()
            outs = llm.embed(texts, use_tqdm=False, truncate_prompt_tokens=-1)
            sync()
            runs.append(time.perf_counter() - t0)
            if runs is times:
                ours = stack_outputs(outs).numpy()
    llm.first_tokenize_chunk = first_chunk
    eng_s = statistics.median(times)
    hc = llm.model_config.hf_config
    gemm_dtype = torch.bfloat16 if cuda else torch.float32
    gflops = gemm_gflops(hc.hidden_size, hc.intermediate_size, gemm_dtype, tokens=8192 if cuda else 512,
                         seconds=1.0 if cuda else 0.2, device=device)  # fmt: skip
    fpt = flops_per_token(hc, lengths)
    tok_s = n_tokens / eng_s
    row = {
        "model": name,
        "shape": f"{hc.num_hidden_layers} x {hc.hidden_size}",
        "engine_dtype": str(llm.model_config.dtype).removeprefix("torch."),
        "engine_packed": llm.runner.packed,
        "passages": len(texts),
        "tokens": n_tokens,
        "engine_tokens_per_s": round(tok_s),
        "engine_runs_s": times,
        "first_tokenize_chunk": first_chunk,
        "engine_tokens_per_s_one_chunk": round(n_tokens / statistics.median(one_chunk)),
        "st_dtype": "float16" if cuda else "float32",
        "st_tokens_per_s_by_batch": {str(bs): round(n_tokens / s) for bs, s in st_runs.items()},
        "st_best_batch": best_bs,
        "st_best_tokens_per_s": round(n_tokens / st_runs[best_bs]),
        "speedup_vs_st_best": st_runs[best_bs] / eng_s,
        "speedup_vs_st_b32": st_runs[32] / eng_s if 32 in st_runs else None,
        "gemm_tflops": gflops / 1e3,
        "flops_per_token": fpt,
        "share_of_gemm_rate": tok_s * fpt / (gflops * 1e9),
        "min_cosine_vs_fp32": min_cosine(ref, ours),
    }
    llm = None
    if cuda:
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the default model's folder (its tokenizer too)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-sizes", default="32,64,128,256", help="Sentence Transformers batch sizes")
    ap.add_argument("--dry", action="store_true", help="2 x 64 shapes: the same steps on a CPU")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from vllm_pool.engine.model_source import resolve_model

    model_dir = Path(resolve_model(args.model))
    texts = load_texts(limit=args.limit)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    result: dict[str, Any] = {"dry": args.dry, "device": args.device}
    start = time.perf_counter()
    result["minilm"] = run_model("all-MiniLM-L6-v2", model_dir, texts, args.device, args.rounds, batch_sizes)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SHAPES:
            t0 = time.perf_counter()
            folder = build_shape(name, model_dir, Path(tmp) / name, args.device, args.dry)
            built = time.perf_counter() - t0
            result[name] = run_model(name, folder, texts, args.device, args.rounds, batch_sizes)
            result[name]["build_seconds"] = built
            shutil.rmtree(folder, ignore_errors=True)
    result["seconds"] = time.perf_counter() - start
    result["machine"] = machine()
    write_result("gpu_shapes", result)
    keys = ("engine_tokens_per_s", "st_best_tokens_per_s", "st_best_batch", "speedup_vs_st_best",
            "share_of_gemm_rate", "min_cosine_vs_fp32")  # fmt: skip
    summary = {k: {f: v[f] for f in keys} for k, v in result.items() if isinstance(v, dict) and "model" in v}
    print(json.dumps({"gpu_shapes": summary, "seconds": round(result["seconds"], 1)}))


if __name__ == "__main__":
    main()
