#!/usr/bin/env bash
# Issue 27: peak RSS and wall time of `kvfold eval` and `eval --compare` with the LM head read in
# vocabulary blocks (the default, ~64 MiB of float32 rows at a time) and whole (--vocab-block =
# the vocabulary size: the behaviour before the blocked head), alternated whole, blocked, whole,
# blocked, ... in one binary. --compare scores the model against itself under a 4-bit RTN cache
# (the same two sweeps and two heads as against a conversion, without converting; a KL that is
# not zero); ppl and KL are printed to show both ways give the same numbers.
#   bench/vocab_block.sh [SHAPE ...]   (default llama-3-8b; bench_make_random_checkpoint shapes)
# BUILD=folder with bin/ (default build), WORK=folder for the checkpoints (default
# /tmp/kvfold-scale, shared with scale_sweep.sh), ROUNDS=runs per way (default 1).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-$src/build}"
shared="${KVFOLD_SHARED:-$src/../shared}"
work="${WORK:-/tmp/kvfold-scale}"
rounds="${ROUNDS:-1}"
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(llama-3-8b)
text="$shared/text/wikitext-2/test.raw.txt"
mkdir -p "$work"
source "$src/bench/shape_checkpoints.sh"
machine_header

# row SHAPE LABEL HEAD ARGS...: one table row (wall, peak RSS, ppl, KL).
row() {
  local shape="$1" label="$2" head="$3"; shift 3
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$build/bin/kvfold" eval "$@" --json --quiet >"$work/out.json"
  python3 - "$work/out.json" "$work/time.txt" "$shape" "$label" "$head" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); wall, rss = open(sys.argv[2]).read().split()
kl = j["compare"]["kl"] if "compare" in j else None
print(f"| {sys.argv[3]} | {sys.argv[4]} | {sys.argv[5]} | {float(wall):.1f} | {int(rss) / 1048576:.2f} "
      f"| {j['ppl']:.6f} | {'' if kl is None else f'{kl:.6e}'} |")
PY
}

echo "| shape | command | LM head | wall s | peak RSS GiB | ppl | KL |"
echo "|---|---|---|---|---|---|---|"
for shape in "${shapes[@]}"; do
  model="$work/$shape"
  shape_checkpoint "$shape" "$model"
  vocab=$(python3 -c "import json; print(json.load(open('$model/config.json'))['vocab_size'])")
  for what in eval compare; do
    args=("$model" --text "$text" --max-windows 2)
    [ "$what" = eval ] || args+=(--compare "$model" --kv-cache 'quant<scheme=rtn,bits=4>')
    label="eval, 2 windows of 256"
    [ "$what" = eval ] || label="eval --compare (itself, 4-bit cache), 2 windows"
    for ((r = 0; r < rounds; ++r)); do
      row "$shape" "$label" "whole ($vocab rows)" "${args[@]}" --vocab-block "$vocab"
      row "$shape" "$label" "blocked (default)" "${args[@]}"
    done
  done
done
