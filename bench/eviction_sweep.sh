#!/usr/bin/env bash
# L2-norm KV eviction on every shared model (issue 6): bench_eviction_sweep per model with its
# evaluation and calibration texts (W = 256, 32 evaluation windows, 16 copy sequences, 32
# calibration windows for the norm analysis), 2 threads. Prints markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${KVFOLD_SHARED:-../shared}"
for model in stories260K stories260K-mha micro-mha mini-mha mini-mha-bf16-sharded; do
  case "$model" in
    stories*) calib="$shared/text/tinystories/calib.txt"; eval="$shared/text/tinystories/eval.txt" ;;
    *) calib="$shared/text/wikitext-2/valid.tokens.txt"; eval="$shared/text/wikitext-2/test.raw.txt" ;;
  esac
  build/bin/bench_eviction_sweep "$shared/models/$model" "$eval" "$calib" --windows 32 --copy 16 --calib-windows 32 --threads 2
done
