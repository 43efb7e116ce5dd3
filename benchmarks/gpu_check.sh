#!/usr/bin/env bash
# One prepared GPU check (meant to finish under 6 minutes on one H100/H200): the parity checks
# (half precision, packed and padded, against fp32), the throughput of the engine (dtype auto)
# against sentence-transformers fp16 on the same model, mixed-length and short-text corpora,
# and the compute-bound shapes (benchmarks/gpu_shapes.py: BERT-large and Qwen2-0.5B shapes
# built from random weights on the device, plus the default model, each against
# sentence-transformers fp16 at its best batch size); then one JSON line on stdout.
# Everything else goes to stderr.
#
#   bash benchmarks/gpu_check.sh
#
# Where .venv exists (this repo's `make install-test`), it runs there. On the lent GPU
# machine (no hub, no PyPI) it uses the image's python3, which has torch, transformers and
# sentence-transformers, puts this package on its path (no pip, no build), and rebuilds the
# default model from the fp16 bundle: run `make gpu-bundle` here first and carry `.gpu`.
#
# Dry run of the same steps on a CPU (the tests do this, small):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_LIMIT=40 GPU_CHECK_ROUNDS=1 VLLM_POOL_BENCH_RESULTS=/tmp/r bash benchmarks/gpu_check.sh
# (on a CPU the shapes shrink to 2 layers x 64: --dry).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_CHECK_DEVICE:-cuda}
LIMIT=${GPU_CHECK_LIMIT:-3290}
ROUNDS=${GPU_CHECK_ROUNDS:-5}
SHAPES_LIMIT=${GPU_CHECK_SHAPES_LIMIT:-2000}
SHAPES_ROUNDS=${GPU_CHECK_SHAPES_ROUNDS:-3}
export VLLM_POOL_BENCH_RESULTS=${VLLM_POOL_BENCH_RESULTS:-$PWD/benchmarks/results}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
  MODEL=sentence-transformers/all-MiniLM-L6-v2
else
  PY="python3 -P"  # -P: the working directory must not shadow the laid-out package
  SITE=$(mktemp -d)
  PYTHONPATH=$PWD $PY -m benchmarks.gpu_bundle source "$SITE"
  export PYTHONPATH="$SITE:$PWD"
  MODEL=$(mktemp -d)/minilm
  $PY -m benchmarks.gpu_bundle unpack .gpu/minilm "$MODEL" >&2
fi
if [ "$DEVICE" = cuda ]; then
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" >&2
fi
$PY -m benchmarks.gpu_parity --model "$MODEL" --device "$DEVICE" --limit "$LIMIT" >&2
for corpus in mixed short; do
  flag=$([ $corpus = short ] && echo --short || true)
  $PY -m benchmarks.embed_throughput --model "$MODEL" --device "$DEVICE" --dtype auto \
    --limit "$LIMIT" --rounds "$ROUNDS" --name "gpu_check_$corpus" $flag >&2
done
if [ "$DEVICE" = cpu ]; then shapes_args="--dry --batch-sizes 8,16"; else shapes_args="--batch-sizes 32,64,128,256"; fi
# shellcheck disable=SC2086
$PY -m benchmarks.gpu_shapes --model "$MODEL" --device "$DEVICE" --limit "$SHAPES_LIMIT" \
  --rounds "$SHAPES_ROUNDS" $shapes_args >&2
export GPU_CHECK_SECONDS=$SECONDS
$PY - <<'PY'
import json, os, pathlib
results = pathlib.Path(os.environ["VLLM_POOL_BENCH_RESULTS"])
res = {}
for corpus in ("mixed", "short"):
    r = json.loads((results / f"gpu_check_{corpus}.json").read_text())
    res.setdefault("machine", r["machine"])
    res[corpus] = {k: r[k] for k in ("speedup", "min_cosine", "engine_dtype", "engine_packed", "st_dtype", "passages")}
    res[corpus]["engine_passages_per_s"] = round(r["engine"]["passages_per_s"], 1)
    res[corpus]["st_passages_per_s"] = round(r["sentence_transformers"]["passages_per_s"], 1)
parity = json.loads((results / "gpu_parity.json").read_text())
res["parity"] = {k: v for k, v in parity.items() if k != "machine"}
shapes = json.loads((results / "gpu_shapes.json").read_text())
keep = ("shape", "engine_dtype", "engine_packed", "tokens", "engine_tokens_per_s", "first_tokenize_chunk",
        "engine_tokens_per_s_one_chunk", "st_dtype",
        "st_tokens_per_s_by_batch", "st_best_batch", "st_best_tokens_per_s", "speedup_vs_st_best",
        "gemm_tflops", "share_of_gemm_rate", "min_cosine_vs_fp32")
res["shapes"] = {k: {f: v[f] for f in keep} for k, v in shapes.items() if isinstance(v, dict) and "model" in v}
res["seconds"] = int(os.environ["GPU_CHECK_SECONDS"])
print(json.dumps({"gpu_check": res}))
PY
