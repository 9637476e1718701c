#!/usr/bin/env bash
# The commands that made the cells under this folder (issue #23), one bench call per seed so that every
# finished seed holds all columns (paired differences need the same seeds). DATA_DIR: a CL_Benchmark copy.
# Each method at its defaults here (OSF at its own lr); the tuning and the tuned cells are in the sibling
# folders. A cell folder keeps the run's results.json and config.yaml only, copied from the run folders with
#   (cd "$OUT" && find . -maxdepth 4 \( -name results.json -o -name config.yaml \) -exec cp --parents {} "$DEST" \;)
# Sessions 8 (a CPU without bf16 units) and 9 (one with them) ran them; every cell computed in float32
# (session 9's benchmark pins dtype=float32 and train.mixed_precision=none; session 8's auto resolved to the
# same on its CPU, which each cell's results.json records and the table's "Cells ran as" line counts).
set -eu
DATA_DIR=${DATA_DIR:-/work/shared/cl_benchmark/CL_Benchmark}
OUT=${OUT:-runs/cpu_forgetting}
# A column's own settings, the same in every call that runs it (grid, tuning, tuned grid): the paper's form
# of O-LoRA's loss, and OSF's learning rate (chosen on the proxy grid's validation split; at LoRA's it collapses).
own() { case "$1" in olora@paper) echo olora@paper:olora.orth=paper ;; osf) echo osf:train.lr=1e-4 ;; esac; }
# Session 8, order 1:
olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 1 \
    --methods seqlora olora inclora inflora replay_lora --seeds 1 --out "$OUT"
for seed in 2 3 4 5; do
    olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 1 \
        --methods seqlora olora inflora replay_lora --seeds "$seed" --out "$OUT"
done
# Session 8, order 2 (agnews → dbpedia), seeds 1-2 of SeqLoRA and seed 1 of O-LoRA:
olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 2 --methods seqlora olora --seeds 1 --out "$OUT"
olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 2 --methods seqlora --seeds 2 --out "$OUT"
# Session 9, order 1: the paper's O-LoRA loss, N-LoRA, EWC, LwF, MTL (the upper bound); IncLoRA seeds 2-5:
for seed in 1 2 3 4 5; do
    M="olora@paper nlora ewc_lora lwf_lora mtl_lora"
    [ "$seed" != 1 ] && M="inclora $M"
    olora bench "data.dir=$DATA_DIR" olora@paper:olora.orth=paper --benchmark cpu_forgetting --orders 1 \
        --methods $M --seeds "$seed" --out "$OUT"
done
# Session 9, order 2: SeqLoRA and O-LoRA towards 5 seeds, then the three best others of order 1 (by mean AA),
# as far as the session's time allowed (docs/RESULTS.md says which cells exist):
olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 2 --methods olora --seeds 2 --out "$OUT"
for seed in 3 4 5; do
    olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 2 --methods seqlora olora --seeds "$seed" \
        --out "$OUT"
done
# The three best others of order 1 by mean AA (replay_lora, lwf_lora, inflora), seeds 1-3 (session 9) and 4-5
# (session 10):
for seed in 1 2 3 4 5; do
    olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 2 --methods replay_lora lwf_lora inflora \
        --seeds "$seed" --out "$OUT"
done
# Session 11, order 1: the four columns still missing, one column at a time, all 5 seeds:
for col in osf olora_proj migu ella; do
    olora bench "data.dir=$DATA_DIR" $(own "$col") --benchmark cpu_forgetting --orders 1 --methods "$col" \
        --seeds 1 2 3 4 5 --out "$OUT"
done
# Session 13, order 2: OSF (the second-best other of order 1 by AA once session 11's columns landed) and O-LoRA
# by projection; order 1: seeds 6-10 of O-LoRA and OSF (O-LoRA − OSF needed ~11 seeds for a ±4 interval):
olora bench "data.dir=$DATA_DIR" $(own osf) --benchmark cpu_forgetting --orders 2 --methods osf --seeds 1 2 3 4 5 \
    --out "$OUT"
for seed in 6 7 8 9 10; do
    olora bench "data.dir=$DATA_DIR" $(own osf) --benchmark cpu_forgetting --orders 1 --methods olora osf \
        --seeds "$seed" --out "$OUT"
done
olora bench "data.dir=$DATA_DIR" --benchmark cpu_forgetting --orders 2 --methods olora_proj --seeds 1 2 3 4 5 \
    --out "$OUT"
# Session 10: each column's one main hyper-parameter at three values on the validation split (olora tune, one
# call per column so that it can stop between columns; the cells are in results/cpu_forgetting_tuning, whose
# tuning.md opens with the command that rebuilds it and tuned.txt from them):
# session 11 added the four new columns (osf ella migu olora_proj):
for col in olora ewc_lora lwf_lora inflora olora@paper nlora replay_lora inclora seqlora mtl_lora \
        osf ella migu olora_proj; do
    olora tune "data.dir=$DATA_DIR" $(own "$col") --benchmark cpu_forgetting --methods "$col" --seeds 1 --out "$OUT-tuning"
done
# Session 10: test-split runs at the chosen values (TUNED: the tuning's tuned.txt), one column at a time, all 5
# seeds (results/cpu_forgetting_tuned, where EWC's and LwF's default cells are copied because tuning kept their
# defaults; OSF kept its own lr 1e-4, so its cells are copied too); session 10 ran seqlora olora replay_lora,
# session 11 the next five, session 13 olora_proj migu ella:
TUNED=${TUNED:-results/cpu_forgetting_tuning/tuned.txt}
for col in seqlora olora replay_lora inclora mtl_lora nlora olora@paper inflora olora_proj migu ella; do
    olora bench "data.dir=$DATA_DIR" $(own "$col") $(grep "^$col:" "$TUNED") --benchmark cpu_forgetting --orders 1 \
        --methods "$col" --seeds 1 2 3 4 5 --out "$OUT-tuned"
done
# The table and the two figures, from the committed cells, on a fresh clone (nothing trains; the command is
# also the first line of table.md, which tests/test_bench.py runs):
# olora bench data.dir=/work/shared/cl_benchmark/CL_Benchmark olora@paper:olora.orth=paper osf:train.lr=1e-4 \
#     --benchmark cpu_forgetting --orders 1 2 --methods seqlora olora olora@paper inclora nlora osf inflora \
#     olora_proj migu ella ewc_lora lwf_lora replay_lora mtl_lora --seeds 1 2 3 4 5 6 7 8 9 10 \
#     --out results/cpu_forgetting \
#     --table-only --results-md results/cpu_forgetting/RESULTS.md
