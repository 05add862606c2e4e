#!/usr/bin/env bash
# The GPU checks, prepared as one script for a short loan of a GPU machine (see bench/README.md):
# peak VRAM and rollout speed for Qwen2.5-shaped models, then one p2o step against one TRL step.
# Results go to $OUT (the device tool's folder) or bench/results. Wheels in .whl/ are installed
# first when the machine lacks a package (bitsandbytes, trl).
set -u
OUT=${OUT:-bench/results}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, bitsandbytes as b; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', b.__version__)"
python3 -c "import trl; print('trl', trl.__version__)" || echo "trl unavailable: the TRL comparison will fail"

# one process per size, each under its own time limit (seconds), so a slow size cannot cost the
# others' results. One device call runs at most 10 minutes: split the work, e.g.
#   SPECS="0.5B:200 1.5B:240" TRL=0 bash bench/gpu_run.sh      then      SPECS="3B:300" bash bench/gpu_run.sh
for spec in ${SPECS:-0.5B:200 1.5B:240}; do
  size=${spec%%:*}
  echo "== gpu_memory $size"
  timeout ${spec##*:} python3 bench/gpu_memory.py --sizes $size --json "$OUT/gpu_memory_$size.json" 2>&1 | tail -12
done

[ "${TRL:-1}" = 1 ] || exit 0
echo "== step_vs_trl (random-weight Qwen2.5-0.5B shape, 4-bit)"
python3 - <<'PY'
import sys; sys.path.insert(0, "bench")
import gpu_memory as g
tok, _ = g.build_tokenizer("/tmp/q05", "auto", "data/arith_train.jsonl")
g.build_model("/tmp/q05", "0.5B", tok, dry_run=False)
PY
timeout ${TRL_TIMEOUT:-280} python3 bench/step_vs_trl.py --model /tmp/q05 --device cuda --steps 4 --group-size 8 \
  --prompts-per-step 4 --max-new-tokens 256 --lora-r 16 --json "$OUT/step_vs_trl_gpu.json" 2>&1 | tail -25
