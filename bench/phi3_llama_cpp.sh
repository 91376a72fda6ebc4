#!/usr/bin/env bash
# Phi-3-mini's shape (3.8B, MHA 32 x 96) to GQA (8 KV heads), judged by llama.cpp: a random BF16
# checkpoint with Phi-3's tokenizer (Llama 2's plus its 11 added tokens), gqa-svd to HF, export
# to GGUF phi3 (F32), then log p of 64 WikiText-2 tokens from kvfold eval and from llama.cpp
# (tests/js, F32 cache, flash attention off). Wall time and peak RSS of each step.
# Usage: bench/phi3_llama_cpp.sh   (WORK=/tmp/kvfold-scale, about 30 GB; BUILD=build folder)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-$src/build}"
shared="${KVFOLD_SHARED:-$src/../shared}"
work="${WORK:-/tmp/kvfold-scale}"
kvfold=$build/bin/kvfold
mkdir -p "$work"
source "$src/bench/shape_checkpoints.sh"
machine_header
timed() {  # LABEL COMMAND...: wall and peak RSS
  local label=$1; shift
  /usr/bin/time -v "$@" >"$work/out.log" 2>"$work/time.log"
  echo "| $label | $(grep 'Elapsed (wall' "$work/time.log" | awk '{print $NF}') | $(grep 'Maximum resident' "$work/time.log" | awk '{printf "%.2f", $NF / 1048576}') |"
}
model=$work/phi-3-mini
shape_checkpoint phi-3-mini "$model"  # with Phi-3's tokenizer (Llama 2's and its added tokens)
echo "| step | wall (m:ss) | peak RSS (GiB) |"
echo "|---|---|---|"
rm -rf "$work/p3m-gqa-hf"
timed "convert gqa-svd<kv-heads=8,refit=none>, 1024 calibration tokens" "$kvfold" convert "$model" \
  --calib "$shared/text/wikitext-2/valid.tokens.txt" --calib-tokens 1024 \
  --passes 'gqa-svd<kv-heads=8,refit=none>' -o "$work/p3m-gqa-hf" --quiet
timed "export to GGUF phi3, F32" "$kvfold" export "$work/p3m-gqa-hf" -o "$work/p3m-gqa.gguf" \
  --dtype f32 --force --quiet
"$kvfold" eval "$work/p3m-gqa-hf" --text "$shared/text/wikitext-2/test.raw.txt" --window 64 \
  --max-windows 1 --token-logp "$work/p3m.logp.json" --quiet >/dev/null
timed "llama.cpp log p of 64 tokens" node "$src/tests/js/llama_cpp_logp.mjs" "$work/p3m-gqa.gguf" \
  "$work/p3m.logp.json" --tolerance 1e-4
cut -c1-400 "$work/out.log"
