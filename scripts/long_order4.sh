#!/usr/bin/env bash
# The long benchmark's order 4 at the paper's sizes, as far as the data allows, for a lent GPU (issue #23):
# MNLI → CB → WiC → COPA → QQP → BoolQA → RTE → IMDB → yelp → amazon → SST-2 → dbpedia → agnews → MultiRC
# (benchmark long_proxy: yahoo, the 15th task, has no files in the data copy; dbpedia's train and yelp's and
# MultiRC's test splits are carved, seeded and disjoint, and every output lists these deviations).
#
#   DATA_DIR=/path/to/CL_Benchmark bash scripts/long_order4.sh      # again after each stop, until "complete"
#
# The same resumable, time-limited grid as scripts/paper_scale.sh (its inputs apply: MODEL, SEEDS, LIMIT,
# TRAIN_PC, TEST_PC, EXTRA, TABLE_ONLY), by default O-LoRA, SeqLoRA and InfLoRA, one seed. 14 tasks of up to
# ~1,000 examples per class are ~10x the standard order's steps: several hours of device time per method.
set -eu
export BENCHMARK=long_proxy ORDERS=4 OUT=${OUT:-runs/long_order4}
export METHODS=${METHODS:-olora seqlora inflora} SEEDS=${SEEDS:-1}
exec bash "$(dirname "$0")/paper_scale.sh"
