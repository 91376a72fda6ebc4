#!/usr/bin/env bash
# Per-layer KV heads against uniform heads at equal KV bytes: gqa-svd<kv-heads=auto,kv-head-total=N>
# (each layer's count chosen by measured fold error, exact knapsack) next to gqa-svd<kv-heads=N/L>
# on every layer, both with the default o_proj refit; KL to the source on held-out text, and,
# for the auto row, the per-layer counts and llama.cpp's own log p (deci GGUF, F32 cache, flash
# off) against kvfold's.
#   bench/per_layer_heads.sh [MODEL] [EVAL_WINDOWS] [BUILD]   (default mini-mha, 16)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${KVFOLD_SHARED:-../shared}
model=${1:-$shared/models/mini-mha} windows=${2:-16} build=${3:-build}
calib=$shared/text/wikitext-2/valid.tokens.txt text=$shared/text/wikitext-2/test.raw.txt
case $(basename "$model") in stories*)
  calib=$shared/text/tinystories/calib.txt text=$shared/text/tinystories/eval.txt ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/kvfold-per-layer.XXXXXX")
trap 'rm -rf "$work"' EXIT
kvfold=$build/bin/kvfold
read -r layers kv < <(python3 -c "import json; c=json.load(open('$model/config.json')); \
print(c['num_hidden_layers'], c.get('num_key_value_heads', c['num_attention_heads']))")
kl() {  # PASSES -> "KL counts"
  "$kvfold" convert "$model" --calib "$calib" --calib-tokens 16384 --passes "$1" -o "$work/out" \
    --force --quiet >/dev/null
  local k
  k=$("$kvfold" eval "$work/out" --text "$text" --max-windows "$windows" --compare "$model" \
    --json --quiet | python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['compare']['kl'])")
  echo "$k $(python3 -c "import json; c=json.load(open('$work/out/kvfold.json')); \
print(json.dumps(c['passes'][0]['kv_heads_after']).replace(' ', ''))")"
}
echo "| KV heads in all | share of the cache | uniform: KL | per layer (auto): KL | per-layer counts | llama.cpp max abs delta log p |"
echo "|---|---|---|---|---|---|"
for per in $((kv / 2)) $((kv / 4)) $((kv / 8)); do
  [ "$per" -ge 1 ] || continue
  total=$((per * layers))
  read -r uniform _ < <(kl "gqa-svd<kv-heads=$per>")
  read -r auto counts < <(kl "gqa-svd<kv-heads=auto,kv-head-total=$total>")
  judge="-"
  if [ -d tests/js/node_modules/node-llama-cpp ]; then
    "$kvfold" export "$work/out" -o "$work/out.gguf" --dtype f32 --force --quiet >/dev/null
    "$kvfold" eval "$work/out" --text "$text" --max-windows 4 --token-logp "$work/ids.json" \
      --quiet >/dev/null
    judge=$(node tests/js/llama_cpp_logp.mjs "$work/out.gguf" "$work/ids.json" |
      python3 -c "import json,sys; print('%.1e' % json.load(sys.stdin)['max_abs_delta_logp'])")
  fi
  echo "| $total | $per/$kv | $uniform | $auto | $counts | $judge |"
done
