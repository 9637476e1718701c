#!/usr/bin/env bash
# The standard order 1 at the paper's sizes, as far as the data allows, for one lent GPU (issue #14).
#
#   bash scripts/paper_scale.sh
#
# Runs `olora bench` over every method (both O-LoRA variants, the successors, the replay/EWC/LwF baselines,
# MTL-LoRA as the upper bound), 3 seeds: order 1 of the CPU proxy's task set
# (dbpedia → amazon → yelp → agnews; yelp stands in for the missing yahoo, dbpedia's train split is
# carved from its test file), TRAIN_PC training examples per class (default null: all, which is the
# paper's ~1,000 per class for amazon and agnews; a number above a task's largest class is an error), TEST_PC
# test examples per class, the paper's global batch 64 (one micro-batch of 64; the GPU's token cap splits
# it only if memory requires), bf16 autocast, the official past-adapter handling (stacked, shared
# dropout), and writes one table ($OUT/RESULTS.md, $OUT/grid/table.csv). Each call stops itself after
# LIMIT seconds (default 540, inside a 10-minute device call) and writes the table of what has finished;
# finished runs are skipped and an interrupted one resumes from its last step checkpoint, so calling it
# again continues where it stopped (done when it prints "paper_scale: complete"). TABLE_ONLY=1 writes the
# table of the finished runs without training. The whole grid (14 columns x 3 seeds at ~2-4 min a run on an
# H200) needs ~2.5 h of device time: many calls.
#
# Sizing (dbpedia's carved train has 253-292 per class, yelp's 490-518, amazon and agnews ~1,000):
# 15,304 training examples = 242 optimizer steps of 64 per method, and the lower triangle of the matrix
# at 100 test examples per class is ~8,500 prompts. Measured on an H200 (docs/RESULTS.md): O-LoRA 4.0 min,
# SeqLoRA 2.2 min per run.
#
# Inputs (environment): DATA_DIR (a CL_Benchmark folder), MODEL (default smollm2; a local checkpoint
# folder or hub id also works), TRAIN_PC / TEST_PC (default null / 100), SEEDS (default "1 2 3"), METHODS
# (default: all 14 columns below), LIMIT (seconds per call), BENCHMARK / ORDERS (default proxy / 1;
# scripts/long_order4.sh sets long_proxy / 4), OUT (default runs/paper_scale), TABLE_ONLY, EXTRA (more
# key=value overrides, e.g. for a CPU dry run: EXTRA="train.max_steps=1 train.mixed_precision=none").
set -eu
OUT=${OUT:-runs/paper_scale}
MODEL=${MODEL:-smollm2}
TRAIN_PC=${TRAIN_PC:-null}
TEST_PC=${TEST_PC:-100}
SEEDS=${SEEDS:-1 2 3}
METHODS=${METHODS:-olora olora@paper seqlora inclora nlora osf inflora migu ella olora_proj replay_lora ewc_lora lwf_lora mtl_lora}
LIMIT=${LIMIT:-540}
BENCHMARK=${BENCHMARK:-proxy}
ORDERS=${ORDERS:-1}
EXTRA=${EXTRA:-}
TABLE=${TABLE_ONLY:+--table-only}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() \
else 'CPU (no CUDA device)')" | tee -a "$OUT/device.txt"
start=$SECONDS
# shellcheck disable=SC2206
ARGS=("model=$MODEL" "data.dir=$DATA_DIR" "data.train_per_class=$TRAIN_PC" "data.test_per_class=$TEST_PC"
      train.batch_size=64 train.grad_accum=1 dtype=float32 train.mixed_precision=bf16 past.fold=stack
      past.dropout=shared eval.batch_size=64 $EXTRA
      --benchmark "$BENCHMARK" --orders $ORDERS --methods $METHODS --seeds $SEEDS --out "$OUT/grid" --results-md "$OUT/RESULTS.md")
case " $METHODS " in *" olora@paper "*) ARGS=(olora@paper:olora.orth=paper "${ARGS[@]}") ;; esac
table() { python3 -m olora bench "${ARGS[@]}" --table-only 2>&1 | tee -a "$OUT/bench.log" | tail -n 40; }
if [ -n "$TABLE" ]; then
    table
else
    # timeout signals the whole process group: python stops at SIGINT; the interrupted run keeps its last
    # step checkpoint and resumes from it on the next call
    set +e
    timeout -s INT -k 30 "$LIMIT" python3 -m olora bench "${ARGS[@]}" 2>&1 | tee -a "$OUT/bench.log" \
        | grep -v "it/s\]$"
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" = 0 ]; then
        echo "paper_scale: complete" | tee -a "$OUT/device.txt"
    else
        echo "paper_scale: stopped (LIMIT=$LIMIT s or an error, see $OUT/bench.log): call again to continue" \
            | tee -a "$OUT/device.txt"
        table || true  # the table of the runs finished so far (none yet, maybe)
        status=stopped
    fi
fi
echo "paper_scale: $((SECONDS - start)) s wall" | tee -a "$OUT/device.txt"
[ "${status:-0}" = stopped ] || test -f "$OUT/RESULTS.md"
