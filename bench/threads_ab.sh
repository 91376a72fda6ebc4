#!/usr/bin/env bash
# Issue 27: how two threads compare with one, for two builds, at a published shape: a conversion
# (a quarter of the KV heads by gqa-svd, then kv-scales) and an eval, each with --threads 1 and 2,
# the builds alternated (A B, B A, ...: bench/pair_order.sh) within each command and thread count.
#   bench/threads_ab.sh BUILD_B BUILD_A [SHAPE] [ROUNDS]   (default tinyllama-1.1b, 2 rounds)
# TOKENS= calibration tokens (default 1024); PASSES= the pipeline (KV is replaced by a quarter of
# the KV heads; default 'gqa-svd<kv-heads=KV,refit=none>,kv-scales'); WINDOWS= eval windows of 256
# tokens (default 4); WORK= folder for the checkpoints (default /tmp/kvfold-scale); COMMANDS= which
# of convert and eval to run (default both).
# Each row: wall, user and system CPU seconds and peak RSS; eval rows add the tokens/s eval prints
# (which leaves out start-up), convert rows the output's SHA-256 prefix and, from builds that
# count them (--time-passes), the forwards' FLOP over the wall time as a share of the sgemm rate
# in the header (issue 27's throughput).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
shared="${KVFOLD_SHARED:-$src/../shared}"
work="${WORK:-/tmp/kvfold-scale}"
builds=("$2" "$1") shape="${3:-tinyllama-1.1b}" rounds="${4:-2}"
calib="$shared/text/wikitext-2/valid.tokens.txt" text="$shared/text/wikitext-2/test.raw.txt"
model="$work/$shape"
mkdir -p "$work"
build="${builds[1]}"
source "$src/bench/shape_checkpoints.sh"
source "$src/bench/pair_order.sh"
machine_header
shape_checkpoint "$shape" "$model"
kv=$(python3 -c "import json; print(max(1, json.load(open('$model/config.json'))['num_key_value_heads'] // 4))")
passes="${PASSES:-gqa-svd<kv-heads=KV,refit=none>,kv-scales}" tokens="${TOKENS:-1024}"
passes="${passes//KV/$kv}" windows="${WINDOWS:-4}"
echo "# $shape: convert --passes '$passes' --calib-tokens $tokens; eval --max-windows $windows"
echo "| command | threads | build | wall s | user s | sys s | peak RSS GiB | tokens/s or output |"
echo "|---|---|---|---|---|---|---|---|"
run() {  # COMMAND THREADS BUILD_INDEX
  local kvfold="${builds[$3]}/bin/kvfold" extra
  if [ "$1" = convert ]; then
    /usr/bin/time -f "%e %U %S %M" -o "$work/ab.time" "$kvfold" convert "$model" --calib "$calib" \
      --calib-tokens "$tokens" --passes "$passes" -o "$work/$shape-ab" --force --quiet \
      --threads "$2" --time-passes >/dev/null 2>"$work/ab.err"
    extra=$(cat "$work/$shape-ab"/*.safetensors | sha256sum | cut -c1-12)
    extra+=$(awk -v s="$sgemm_gflops" -v w="$(cut -d' ' -f1 "$work/ab.time")" '/^time  forwards/ {
      printf ", forwards %.2f TFLOP, %.0f%% of sgemm", $3, 100 * $3 * 1000 / w / s }' "$work/ab.err")
  else
    /usr/bin/time -f "%e %U %S %M" -o "$work/ab.time" "$kvfold" eval "$model" --text "$text" \
      --max-windows "$windows" --threads "$2" >"$work/ab.out"
    extra=$(awk '/^speed/ {print $2}' "$work/ab.out")
  fi
  local label=$([ "$3" = 0 ] && echo "A ${builds[0]}" || echo "B ${builds[1]}")
  awk -v c="$1" -v t="$2" -v l="$label" -v x="$extra" \
    '{printf "| %s | %s | %s | %.1f | %.1f | %.1f | %.2f | %s |\n", c, t, l, $1, $2, $3, $4 / 1048576, x}' \
    "$work/ab.time"
}
for command in ${COMMANDS:-convert eval}; do
  for threads in 1 2; do
    for ((r = 0; r < rounds; ++r)); do
      for i in $(PairOrder "$r"); do run "$command" "$threads" "$i"; done
    done
  done
done
rm -rf "$work/$shape-ab" "$work/ab.out" "$work/ab.err"
