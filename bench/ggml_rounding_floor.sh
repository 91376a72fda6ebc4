#!/usr/bin/env bash
# How far apart two exact implementations of a 4/5-bit llama.cpp cache can land: the source
# checkpoint with the lowest mantissa bit of k_proj's weights flipped at random (seeded; keys move
# by ~1e-7, the size of the difference between kvfold's and llama.cpp's keys after RoPE), run
# through llama.cpp itself (-fa on) and through kvfold's simulation (`eval --kv-cache ggml<..>`).
# The spread over seeds *within one runtime* is the floor below which no simulation can agree
# with llama.cpp: a code that sits on a rounding boundary flips either way.
#   bench/ggml_rounding_floor.sh [MODEL] [WINDOWS] [SEEDS] [BUILD]   (mini-mha, 16, 4)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${KVFOLD_SHARED:-../shared}
model=${1:-$shared/models/mini-mha} windows=${2:-16} seeds=${3:-4} build=${4:-build}
text=$shared/text/wikitext-2/test.raw.txt
work=$(mktemp -d "${TMPDIR:-/tmp}/kvfold-ggml-floor.XXXXXX")
trap 'rm -rf "$work"' EXIT
kvfold=$build/bin/kvfold
"$kvfold" eval "$model" --text "$text" --max-windows "$windows" --token-logp "$work/ids.json" \
  --quiet >/dev/null
types="f16 q8_0 q5_1 q5_0 q4_1 q4_0 iq4_nl"
for seed in $(seq 0 "$seeds"); do  # seed 0: the checkpoint as it is
  m=$work/m$seed
  mkdir -p "$m"
  cp "$model"/*.json "$model"/tokenizer* "$m"/ 2>/dev/null || true
  python3 bench/flip_mantissa_bits.py "$model/model.safetensors" "$m/model.safetensors" \
    --tensors k_proj --seed "$seed"
  "$kvfold" export "$m" -o "$m.gguf" --dtype f32 --quiet >/dev/null
  for t in $types; do
    ours=$("$kvfold" eval "$m" --text "$text" --max-windows "$windows" \
      --kv-cache "ggml<k=$t,v=$t>" --json --quiet | python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['ppl'])")
    theirs=$(node tests/js/llama_cpp_logp.mjs "$m.gguf" "$work/ids.json" --cache-k "$t" \
      --cache-v "$t" --flash on --from 128 |
      python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['ppl_llama_cpp'])")
    echo "$t $seed $ours $theirs" >>"$work/rows"
  done
done
python3 - "$work/rows" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    t, seed, ours, theirs = line.split()
    rows.setdefault(t, []).append((int(seed), float(ours), float(theirs)))
print("| K = V | llama.cpp, seed 0 | llama.cpp spread over seeds | kvfold spread over seeds | kvfold - llama.cpp, same seed: mean (min, max) |")
print("|---|---|---|---|---|")
for t, r in rows.items():
    ours = [o for _, o, _ in r]; theirs = [x for _, _, x in r]
    gaps = [o - x for _, o, x in r]
    print("| %s | %.4f | %.4f | %.4f | %+.4f (%+.4f, %+.4f) |" % (t, theirs[0], max(theirs) - min(theirs),
          max(ours) - min(ours), sum(gaps) / len(gaps), min(gaps), max(gaps)))
PY
