#!/usr/bin/env bash
# L2-norm KV eviction on every shared model (issue 6): bench_eviction_sweep per model with its
# evaluation and calibration texts (W = 256, 32 evaluation windows, 16 copy sequences, 32
# calibration windows for the norm analysis), 2 threads. Prints markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
for model in "${shared_models[@]}"; do
  model_texts "$model"
  build/bin/bench_eviction_sweep "$shared/models/$model" "$eval" "$calib" --windows 32 --copy 16 --calib-windows 32 --threads 2
done
