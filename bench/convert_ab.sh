#!/usr/bin/env bash
# Issue 27: one conversion at a published shape timed with two builds, A/B alternated (A B,
# B A, ...: bench/pair_order.sh): wall, user and system CPU time, peak RSS. The conversion is a
# quarter of the KV heads by gqa-svd with its default o_proj refit (three runs of every layer:
# observe for the statistics and the refit, observe after the fold, advance; the refit had a run
# of its own before 2026-12-05), then kv-scales, with 4096 calibration tokens.
#   bench/convert_ab.sh BUILD_B BUILD_A [SHAPE] [ROUNDS]   (default tinyllama-1.1b, 2 rounds)
# WORK=folder for the checkpoints (default /tmp/kvfold-scale, shared with scale_sweep.sh).
# TOKENS= calibration tokens (default 4096); PASSES= the pipeline instead (KV = a quarter of the
# KV heads is substituted for the text KV in it); LAYERS= the shape's first LAYERS layers only.
# Each row ends with the output's SHA-256 prefix.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
shared="${KVFOLD_SHARED:-$src/../shared}"
work="${WORK:-/tmp/kvfold-scale}"
builds=("$2" "$1") shape="${3:-tinyllama-1.1b}" rounds="${4:-2}"
calib="$shared/text/wikitext-2/valid.tokens.txt"
layers="${LAYERS:-}"
model="$work/$shape${layers:+-L$layers}"
mkdir -p "$work"
build="${builds[1]}"
source "$src/bench/shape_checkpoints.sh"
source "$src/bench/pair_order.sh"
machine_header
shape_checkpoint "$shape" "$model" "$layers"
kv=$(python3 -c "import json; print(max(1, json.load(open('$model/config.json'))['num_key_value_heads'] // 4))")
passes="${PASSES:-gqa-svd<kv-heads=KV>,kv-scales}" tokens="${TOKENS:-4096}"
passes="${passes//KV/$kv}"
echo "# $shape${layers:+ ($layers layers)}: convert --passes '$passes' --calib-tokens $tokens --threads 2"
echo "| build | wall s | user s | sys s | sys share | peak RSS GiB | output |"
echo "|---|---|---|---|---|---|---|"
for ((r = 0; r < rounds; ++r)); do
  for i in $(PairOrder "$r"); do
    /usr/bin/time -f "%e %U %S %M" -o "$work/ab.time" "${builds[$i]}/bin/kvfold" convert "$model" \
      --calib "$calib" --calib-tokens "$tokens" --passes "$passes" -o "$work/$shape-ab" --force \
      --quiet --threads 2 >/dev/null
    label=$([ "$i" = 0 ] && echo "A ${builds[0]}" || echo "B ${builds[1]}")
    sha=$(cat "$work/$shape-ab"/*.safetensors | sha256sum | cut -c1-12)
    awk -v l="$label" -v s="$sha" '{printf "| %s | %.1f | %.1f | %.1f | %.0f%% | %.2f | %s |\n", l, $1, $2, $3, 100 * $3 / ($2 + $3), $4 / 1048576, s}' "$work/ab.time"
  done
done
rm -rf "$work/$shape-ab"
