#!/usr/bin/env bash
# Issue 27: the o_proj refit's contexts under --hidden-memory. The same conversion (a quarter of
# the KV heads by gqa-svd with its default refit, 16384 calibration tokens) with the default
# budget (hidden states and contexts all in memory) and with none (both spilled to $TMPDIR): wall
# time, peak RSS, and whether the outputs are the same bytes.
#   bench/refit_memory.sh BUILD [SHAPE] [LAYERS]   (default tinyllama-1.1b, 2 layers)
# WORK=folder for the checkpoint (default /tmp/kvfold-scale).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
shared="${KVFOLD_SHARED:-$src/../shared}"
work="${WORK:-/tmp/kvfold-scale}"
build="$1" shape="${2:-tinyllama-1.1b}" layers="${3:-2}"
calib="$shared/text/wikitext-2/valid.tokens.txt"
model="$work/$shape-$layers-layers"
mkdir -p "$work"
source "$src/bench/shape_checkpoints.sh"
machine_header
[ -d "$model" ] || "$build/bin/bench_make_random_checkpoint" "$shape" "$model" --layers "$layers" >/dev/null 2>&1
kv=$(python3 -c "import json; print(max(1, json.load(open('$model/config.json'))['num_key_value_heads'] // 4))")
passes="gqa-svd<kv-heads=$kv>"
echo "# $shape, $layers layers: convert --passes '$passes' --calib-tokens 16384 --threads 2"
echo "| --hidden-memory MiB | wall s | peak RSS MiB | output |"
echo "|---|---|---|---|"
for mib in 4096 0; do
  /usr/bin/time -f "%e %M" -o "$work/refit.time" "$build/bin/kvfold" convert "$model" \
    --calib "$calib" --calib-tokens 16384 --passes "$passes" -o "$work/refit-$mib" --force --quiet \
    --threads 2 --hidden-memory "$mib" >/dev/null
  sum=$(sha256sum "$work/refit-$mib/model.safetensors" | cut -c1-12)
  awk -v m="$mib" -v s="$sum" '{printf "| %s | %.1f | %.0f | sha256 %s |\n", m, $1, $2 / 1024, s}' "$work/refit.time"
done
rm -rf "$work/refit-4096" "$work/refit-0" "$work/refit.time"
