#!/usr/bin/env bash
# The commands that made the cells under this folder (issue #23), one bench call per seed so that every
# finished seed holds all columns (paired differences need the same seeds). DATA_DIR: a CL_Benchmark copy.
# Each method at its defaults (no hyper-parameter tuned yet, see docs/RESULTS.md). A cell folder keeps the
# run's results.json and config.yaml only, copied from the run folders with
#   (cd "$OUT" && find . -maxdepth 4 \( -name results.json -o -name config.yaml \) -exec cp --parents {} "$DEST" \;)
set -eu
DATA_DIR=${DATA_DIR:-/work/shared/cl_benchmark/CL_Benchmark}
OUT=${OUT:-runs/cpu_forgetting}
olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 1 \
    --methods seqlora olora inclora inflora replay_lora --seeds 1 --out "$OUT"
for seed in 2 3 4 5; do
    olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 1 \
        --methods seqlora olora inflora replay_lora --seeds "$seed" --out "$OUT"
done
# Order 2 (agnews → dbpedia), SeqLoRA and O-LoRA, as far as the session's time allowed:
for seed in 1 2 3 4 5; do
    olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 2 --methods seqlora olora --seeds "$seed" \
        --out "$OUT"
done
# The table and the two figures, from the committed cells, on a fresh clone (nothing trains):
# olora bench data.dir=/work/shared/cl_benchmark/CL_Benchmark --benchmark cpu_forgetting --orders 1 2 \
#     --methods seqlora olora inclora inflora replay_lora --seeds 1 2 3 4 5 --out results/cpu_forgetting \
#     --table-only --results-md results/cpu_forgetting/RESULTS.md
