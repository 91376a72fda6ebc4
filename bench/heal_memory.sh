#!/usr/bin/env bash
# Issues 27 and 28: heal's captured windows under --hidden-memory. The same conversion (a quarter
# of the KV heads by gqa-svd, then heal on every calibration window, target=trajectory: inputs,
# contexts and both residual streams captured) with the default budget (windows in memory) and
# with none (every window spilled to $TMPDIR): wall time, peak RSS, and whether the outputs are
# the same bytes. A second build (BASE) runs the same commands for comparison.
#   bench/heal_memory.sh BUILD [SHAPE] [LAYERS]   (default tinyllama-1.1b, 2 layers)
# SHAPE may also be a checkpoint folder (LAYERS is then ignored). WORK=folder for the checkpoint
# (default /tmp/kvfold-scale); BASE=other build; TOKENS (default 65536: 256 windows of 256);
# STEPS (default 20: memory does not grow with steps); FOLD=the pass before heal (default
# gqa-svd to a quarter of the KV heads), e.g. FOLD='mlkv<kv-layers=3>'; TARGET (default
# trajectory).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
shared="${KVFOLD_SHARED:-$src/../shared}"
work="${WORK:-/tmp/kvfold-scale}"
build="$1" shape="${2:-tinyllama-1.1b}" layers="${3:-2}"
tokens="${TOKENS:-65536}" steps="${STEPS:-20}"
calib="$shared/text/wikitext-2/valid.tokens.txt"
model="$work/$shape-$layers-layers"
[ -d "$shape" ] && model="$shape"
mkdir -p "$work"
source "$src/bench/shape_checkpoints.sh"
machine_header
[ -d "$model" ] || "$build/bin/bench_make_random_checkpoint" "$shape" "$model" --layers "$layers" >/dev/null 2>&1
kv=$(python3 -c "import json; print(max(1, json.load(open('$model/config.json'))['num_key_value_heads'] // 4))")
windows=$((tokens / 256))
fold="${FOLD:-gqa-svd<kv-heads=$kv>}"
passes="$fold,heal<windows=$windows,steps=$steps,target=${TARGET:-trajectory}>"
echo "# $model: convert --passes '$passes' --calib-tokens $tokens --threads 2"
echo "| build | --hidden-memory MiB | wall s | peak RSS MiB | output |"
echo "|---|---|---|---|---|"
for bin in ${BASE:+"$BASE"} "$build"; do
  for mib in 4096 0; do
    /usr/bin/time -f "%e %M" -o "$work/heal.time" "$bin/bin/kvfold" convert "$model" \
      --calib "$calib" --calib-tokens "$tokens" --passes "$passes" -o "$work/heal-$mib" --force \
      --quiet --threads 2 --hidden-memory "$mib" >/dev/null
    sum=$(sha256sum "$work/heal-$mib/model.safetensors" | cut -c1-12)
    awk -v b="$bin" -v m="$mib" -v s="$sum" \
      '{printf "| %s | %s | %.1f | %.0f | sha256 %s |\n", b, m, $1, $2 / 1024, s}' "$work/heal.time"
    rm -rf "$work/heal-$mib"
  done
done
rm -f "$work/heal.time"
