#!/usr/bin/env bash
# kvfold vs llama.cpp: perplexity by kvfold-ppl-v1 (W = 256, first 64 windows, kvfold's token
# ids) of every shared model and of converted outputs, each exported to GGUF (F32 weights) and run
# by llama.cpp itself (node-llama-cpp's prebuilt CPU build, tests/js; scripts/setup.sh installs
# it). Columns: kvfold's ppl; llama.cpp's with an F32 cache and flash attention off (the judged
# configuration) and the largest |delta log p| over all 16384 tokens; llama.cpp's with its
# defaults (F16 cache, flash attention on). Prints a markdown table.
#   bench/llama_cpp_ppl.sh [BUILD] [SHARED]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build} shared=${2:-../shared}
kvfold=$build/bin/kvfold
work=$(mktemp -d "${TMPDIR:-/tmp}/kvfold-llama-ppl.XXXXXX")
trap 'rm -rf "$work"' EXIT
calib=$shared/text/wikitext-2/valid.tokens.txt
wiki=$shared/text/wikitext-2/test.raw.txt
echo "| model | text | kvfold ppl | llama.cpp ppl (F32 cache, flash off) | max abs delta log p | llama.cpp ppl (F16 cache, flash on) |"
echo "|---|---|---|---|---|---|"
row() {  # row NAME HF_FOLDER TEXT
  local name=$1 model=$2 text=$3
  "$kvfold" export "$model" -o "$work/$name.gguf" --dtype f32 --quiet >/dev/null
  "$kvfold" eval "$model" --text "$text" --max-windows 64 --token-logp "$work/$name.json" \
    --quiet >/dev/null
  local exact fast
  exact=$(node tests/js/llama_cpp_logp.mjs "$work/$name.gguf" "$work/$name.json")
  fast=$(node tests/js/llama_cpp_logp.mjs "$work/$name.gguf" "$work/$name.json" --cache f16 \
    --flash on)
  python3 - "$name" "${text#"$shared"/text/}" "$exact" "$fast" <<'PY'
import json, sys
name, text, exact, fast = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print("| %s | %s | %.4f | %.4f | %.1e | %.4f |" % (name, text, exact["ppl_kvfold"],
      exact["ppl_llama_cpp"], exact["max_abs_delta_logp"], fast["ppl_llama_cpp"]))
PY
  rm -f "$work/$name.gguf"
}
for m in stories260K stories260K-mha; do
  row "$m" "$shared/models/$m" "$shared/text/tinystories/eval.txt"
done
for m in micro-mha mini-mha mini-mha-bf16-sharded; do row "$m" "$shared/models/$m" "$wiki"; done
for spec in mini-mha:4 mini-mha:2 micro-mha:2; do
  m=${spec%%:*} kv=${spec##*:}
  "$kvfold" convert "$shared/models/$m" --calib "$calib" --passes "gqa-svd<kv-heads=$kv>" \
    -o "$work/$m-gqa$kv" --quiet >/dev/null
  row "$m gqa-svd<kv-heads=$kv>" "$work/$m-gqa$kv" "$wiki"
done
"$kvfold" convert "$shared/models/mini-mha" --calib "$calib" --passes 'kv-balance' \
  -o "$work/mini-balance" --quiet >/dev/null
row "mini-mha kv-balance" "$work/mini-balance" "$wiki"
