#!/usr/bin/env bash
# Scale: wall time and peak RSS (as /usr/bin/time -v reports it, file pages included) of kvfold
# eval, convert and eval --compare on random-weight checkpoints of published shapes
# (bench_make_random_checkpoint), with the BLAS core and the same machine's sgemm rate.
# Usage: bench/scale_sweep.sh [SHAPE ...]   (default: tinyllama-1.1b; also llama-2-7b, llama-3-8b,
# llama-3.2-1b, qwen2.5-0.5b, qwen3-0.6b, mistral-7b, phi-3-mini, phi-4-mini, gemma-2-2b,
# gemma-3-1b, gemma-3-4b (Gemma 2 on Gemma 3's tokenizer and 262144 rows); all but phi-4-mini
# (whose o200k vocabulary tests/js does not install) with their real tokenizer.json from tests/js
# when scripts/setup.sh installed it)
# WORK=folder for the checkpoints (default /tmp/kvfold-scale; a 7B shape takes 13.5 GB).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-$src/build}"  # BUILD=folder: binaries copied aside, so a rebuild cannot touch a run
shared="${KVFOLD_SHARED:-$src/../shared}"
work="${WORK:-/tmp/kvfold-scale}"
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(tinyllama-1.1b)
text="$shared/text/wikitext-2/test.raw.txt"
calib="$shared/text/wikitext-2/valid.tokens.txt"
mkdir -p "$work"
source "$src/bench/shape_checkpoints.sh"
machine_header

# measure LABEL COMMAND...: one table row.
measure() {
  local label="$1"; shift
  /usr/bin/time -v "$@" >"$work/out.log" 2>"$work/time.log" || { echo "| $shape | $label | failed: $(grep 'kvfold: error' "$work/time.log" | head -1) | |"; return; }
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$work/time.log" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$work/time.log" | awk '{printf "%.2f", $NF / 1048576}')
  echo "| $shape | $label | $wall | $rss |"
}

echo "| shape | command | wall (m:ss) | peak RSS (GiB) |"
echo "|---|---|---|---|"
for shape in "${shapes[@]}"; do
  model="$work/$shape"
  shape_checkpoint "$shape" "$model"
  # A quarter of the KV heads (Llama-2-7B: 32 -> 8), then FP8 scales of the converted K/V, in one
  # convert (issue 14); Qwen3's and Gemma 3's KV heads cannot be folded (k_norm): FP8 scales alone.
  kv=$(python3 -c "import json; print(max(1, json.load(open('$model/config.json'))['num_key_value_heads'] // 4))")
  passes="gqa-svd<kv-heads=$kv,refit=none>,kv-scales"
  case "$shape" in qwen3-0.6b|gemma-3-*) passes="kv-scales" ;; esac
  measure "eval, 2 windows of 256" "$build/bin/kvfold" eval "$model" --text "$text" --max-windows 2 --quiet
  measure "convert $passes, 1024 calibration tokens" "$build/bin/kvfold" convert "$model" \
    --calib "$calib" --calib-tokens 1024 --passes "$passes" -o "$work/$shape-out" --force --quiet
  measure "eval --compare, 2 windows" "$build/bin/kvfold" eval "$work/$shape-out" --compare "$model" --text "$text" \
    --max-windows 2 --quiet
done
