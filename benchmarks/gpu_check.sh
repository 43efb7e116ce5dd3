#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes on one H100): throughput of the engine vs
# sentence-transformers fp16 on the same model, on the mixed-length and the short-text
# corpora, with parity (minimum cosine against ST), then one JSON line on stdout.
#
#   bash benchmarks/gpu_check.sh            # needs a CUDA GPU; installs into .venv if missing
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make install-test >/dev/null
PY=.venv/bin/python
export HF_HUB_OFFLINE=1
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" >&2
for dtype in float16 bfloat16; do
  $PY -m benchmarks.embed_throughput --device cuda --dtype $dtype --limit 3000 --rounds 3 >&2
  $PY -m benchmarks.embed_throughput --device cuda --dtype $dtype --limit 3000 --rounds 3 --short >&2
done
$PY - <<'PY'
import json, pathlib
res = {}
for f in sorted(pathlib.Path("benchmarks/results").glob("embed_throughput_*_gpu.json")):
    r = json.loads(f.read_text())
    res[f.stem] = {"speedup": round(r["speedup"], 3), "min_cosine": r["min_cosine"],
                   "engine_passages_per_s": round(r["engine"]["passages_per_s"], 1)}
print(json.dumps({"gpu_check": res}))
PY
