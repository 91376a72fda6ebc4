#!/usr/bin/env bash
# kvfold's simulation of llama.cpp's cache types (`eval --kv-cache 'ggml<k=K,v=V>'`) against
# llama.cpp itself running the same model with `-ctk K -ctv V -fa on` (node-llama-cpp's prebuilt
# CPU build, tests/js): perplexity over positions W/2..W-1 of the first N windows (eval's scored
# positions for a cache policy), kvfold's ids fed to both. The first row (F32 cache, flash on vs
# off in llama.cpp) is the deviation flash attention alone causes.
#   bench/ggml_cache_vs_llama_cpp.sh [MODEL] [WINDOWS] [BUILD]   (default mini-mha, 16)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${KVFOLD_SHARED:-../shared}
model=${1:-$shared/models/mini-mha} windows=${2:-16} build=${3:-build}
text=$shared/text/wikitext-2/test.raw.txt
work=$(mktemp -d "${TMPDIR:-/tmp}/kvfold-ggml-cache.XXXXXX")
trap 'rm -rf "$work"' EXIT
kvfold=$build/bin/kvfold
"$kvfold" export "$model" -o "$work/m.gguf" --dtype f32 --quiet >/dev/null
"$kvfold" eval "$model" --text "$text" --max-windows "$windows" --token-logp "$work/ids.json" \
  --quiet >/dev/null
llama() {  # K V FLASH -> ppl over the second half of each window
  node tests/js/llama_cpp_logp.mjs "$work/m.gguf" "$work/ids.json" --cache-k "$1" --cache-v "$2" \
    --flash "$3" --from 128 | python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['ppl_llama_cpp'])"
}
echo "| K | V | bits/element | kvfold (simulated) | llama.cpp (-fa on) | difference |"
echo "|---|---|---|---|---|---|"
echo "| f32 | f32 | 32 | $(llama f32 f32 off) (llama.cpp, flash off) | $(llama f32 f32 on) | (flash attention alone) |"
for kv in f16:f16 bf16:bf16 q8_0:q8_0 q5_1:q5_1 q5_0:q5_0 q4_1:q4_1 q4_0:q4_0 iq4_nl:iq4_nl \
  q8_0:q4_0 f16:q4_0 q5_0:f16 f16:q5_0 iq4_nl:f16 f16:iq4_nl; do
  k=${kv%%:*} v=${kv##*:}
  ours=$("$kvfold" eval "$model" --text "$text" --max-windows "$windows" \
    --kv-cache "ggml<k=$k,v=$v>" --json --quiet)
  theirs=$(llama "$k" "$v" on)
  python3 - "$k" "$v" "$ours" "$theirs" <<'PY'
import json, sys
k, v, ours, theirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
print("| %s | %s | %.2f | %.4f | %.4f | %+.4f |" % (k, v, ours["kv_cache"]["average_bits"],
      ours["ppl"], theirs, ours["ppl"] - theirs))
PY
done
