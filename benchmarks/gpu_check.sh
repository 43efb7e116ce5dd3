#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes on one H100): the parity checks (half precision,
# packed and padded, against fp32) and the throughput of the engine (dtype auto) against
# sentence-transformers fp16 on the same model, mixed-length and short-text corpora; then
# one JSON line on stdout. Everything else goes to stderr.
#
#   bash benchmarks/gpu_check.sh
#
# Where .venv exists (this repo's `make install-test`), it runs there. On the lent GPU
# machine (no hub, no PyPI) it uses the image's python3, which has torch, transformers and
# sentence-transformers, installs this package without dependencies, and rebuilds the
# default model from the fp16 bundle: run `make gpu-bundle` here first and carry `.gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
  MODEL=sentence-transformers/all-MiniLM-L6-v2
else
  PY=python3
  SITE=$(mktemp -d)
  $PY -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" . >&2
  export PYTHONPATH="$SITE:$PWD"
  MODEL=$(mktemp -d)/minilm
  $PY -m benchmarks.gpu_bundle unpack .gpu/minilm "$MODEL" >&2
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" >&2
rm -f benchmarks/results/*_gpu.json
$PY -m benchmarks.gpu_parity --model "$MODEL" >&2
for corpus in "" --short; do
  $PY -m benchmarks.embed_throughput --model "$MODEL" --device cuda --dtype auto --limit 3290 --rounds 5 $corpus >&2
done
$PY - <<'PY'
import json, pathlib, torch
res = {"gpu": torch.cuda.get_device_name(0)}
for f in sorted(pathlib.Path("benchmarks/results").glob("embed_throughput_*gpu.json")):
    r = json.loads(f.read_text())
    res[f.stem] = {k: r[k] for k in ("speedup", "min_cosine", "engine_packed", "passages")}
    res[f.stem]["engine_passages_per_s"] = round(r["engine"]["passages_per_s"], 1)
    res[f.stem]["st_fp16_passages_per_s"] = round(r["sentence_transformers"]["passages_per_s"], 1)
parity = json.loads(pathlib.Path("benchmarks/results/gpu_parity.json").read_text())
res["parity"] = {k: v for k, v in parity.items() if k != "machine"}
print(json.dumps({"gpu_check": res}))
PY
