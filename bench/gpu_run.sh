#!/usr/bin/env bash
# The GPU checks, prepared as one script for a short loan of a GPU machine (see bench/README.md):
#   p2o      bench/gpu_p2o_run.py: a short P²O run (rollouts, GEPA with the self reflector, evaluations)
#            per engine (peft, twin eager, twin compiled) at the 0.5B and 1.5B shapes: compile time,
#            rollout/graphs, rollout/eager_calls, tokens/s per phase, mismatch, peak memory allocated
#            and reserved -> gpu_run_<card>.json (issue 17). Run it first.
#   rollout  bench/rollout_speed.py: tokens/s, peak memory and train/sampler mismatch of the rollout
#            engines (peft vs twin eager vs twin compiled) at Qwen2.5-0.5B and 1.5B shapes (issue 8)
#   step     bench/gpu_memory.py: one p2o step per size with the default engine (the twin), then
#            1.5B again with --rollout-engine peft (issue 8: twin step <= 12 s / 6 GB, peft <= 4 GB)
#   trl      bench/step_vs_trl.py: one p2o step against one TRL step
# Choose parts with PARTS (default: all four, in that order); one device call runs at most 10
# minutes, so split them, e.g.
#   PARTS=p2o P2O_SIZES=0.5B bash bench/gpu_run.sh     then     PARTS=p2o P2O_SIZES=1.5B bash bench/gpu_run.sh
#   PARTS=rollout bash bench/gpu_run.sh        then        PARTS="step trl" bash bench/gpu_run.sh
# CPU dry run of the p2o part (2-layer models): OUT=/tmp PARTS=p2o P2O_SIZES=0.5B P2O_FLAGS=--dry-run bash bench/gpu_run.sh
# Results go to $OUT (the device tool's folder) or bench/results. Wheels in .whl/ are installed
# first when the machine lacks a package (bitsandbytes, trl): `pip download --no-deps -d .whl
# bitsandbytes trl` here, then carry .whl with the device call.
set -u
OUT=${OUT:-bench/results}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, bitsandbytes as b; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', b.__version__)"

for part in ${PARTS:-p2o rollout step trl}; do
  case $part in
  p2o)
    # one process per size and engine, each under its own limit (ENGINE_TIMEOUT seconds)
    for size in ${P2O_SIZES:-0.5B 1.5B}; do
      echo "== gpu_p2o_run $size"
      python3 bench/gpu_p2o_run.py --sizes $size --timeout ${ENGINE_TIMEOUT:-180} ${P2O_FLAGS:-} \
        --json "$OUT/gpu_run_$(python3 -c 'import sys; sys.path.insert(0, "bench"); import gpu_p2o_run as g; print(g.card_name())')_$size.json" \
        2>&1 | grep -v Warning | tail -12
    done ;;
  rollout)
    # one process per size under its own limit, so a slow size cannot cost the other's results
    for spec in ${ROLLOUT_SPECS:-0.5B:200 1.5B:300}; do
      size=${spec%%:*}
      echo "== rollout_speed $size"
      timeout ${spec##*:} python3 bench/rollout_speed.py --sizes $size --repeats ${REPEATS:-1} \
        --json "$OUT/rollout_speed_$size.json" 2>&1 | grep -v Warning | tail -8
    done ;;
  step)
    echo "== gpu_memory 1.5B, G=8 x 8 prompts x 256 tokens: twin, then peft"
    for engine in twin peft; do
      timeout ${STEP_TIMEOUT:-200} python3 bench/gpu_memory.py --sizes 1.5B --max-new-tokens 256 \
        --rollout-engine $engine --json "$OUT/gpu_memory_1.5B_$engine.json" 2>&1 | tail -6
    done ;;
  trl)
    python3 -c "import trl; print('trl', trl.__version__)" || { echo "trl unavailable: skipping the TRL comparison"; continue; }
    echo "== step_vs_trl (random-weight Qwen2.5-0.5B shape, 4-bit)"
    python3 - <<'PY'
import sys; sys.path.insert(0, "bench")
import gpu_memory as g
tok, _ = g.build_tokenizer("/tmp/q05", "auto", "data/arith_train.jsonl")
g.build_model("/tmp/q05", "0.5B", tok, dry_run=False)
PY
    timeout ${TRL_TIMEOUT:-280} python3 bench/step_vs_trl.py --model /tmp/q05 --device cuda --steps 4 --group-size 8 \
      --prompts-per-step 4 --max-new-tokens 256 --lora-r 16 --json "$OUT/step_vs_trl_gpu.json" 2>&1 | tail -25 ;;
  *) echo "unknown part $part (p2o, rollout, step, trl)" ;;
  esac
done
