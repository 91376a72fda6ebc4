#!/usr/bin/env bash
# The heal pass (issue 28) on text unlike its calibration text: each shared model at 1/4 of its KV
# heads, gqa-svd (default refit) with and without `heal` (HEAL overrides the spec), calibrated as
# bench/heal.sh and scored on 64 windows (kvfold-ppl-v1, W = 256) of the other family's
# evaluation text: WikiText-2 test for the TinyStories models, TinyStories eval for the WikiText
# ones (TEXT= another file for every model, e.g. ../shared/text/tinyshakespeare/train.txt).
# Prints one markdown table. MODELS overrides the model list.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=${KVFOLD:-build/bin/kvfold}
heal="${HEAL:-heal}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
$kvfold --version | sed 's/^/# /'

echo "| model | KV heads | scored on | original ppl | passes | ppl | KL | gap closed |"
echo "|---|---|---|---|---|---|---|---|"
for model in ${MODELS:-stories260K micro-mha mini-mha}; do
  src="$shared/models/$model"
  model_texts "$model"
  other="${TEXT:-$other}"
  kv0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
  kv=$((kv0 / 4))
  original=$($kvfold eval "$src" --text "$other" --max-windows 64 --threads 2 --quiet --json |
    python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['ppl'])")
  fold_ppl=""
  for passes in "gqa-svd<kv-heads=$kv>" "gqa-svd<kv-heads=$kv>,$heal"; do
    $kvfold convert "$src" --calib "$calib" --passes "$passes" -o "$work/out" --force --quiet --threads 2 >/dev/null
    read -r ppl kl <<< "$($kvfold eval "$work/out" --text "$other" --max-windows 64 --threads 2 --quiet --json --compare "$src" |
      python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f %.4f' % (d['ppl'], d['compare']['kl']))")"
    if [ -z "$fold_ppl" ]; then
      fold_ppl=$ppl; closed="-"
    else
      closed=$(python3 -c "g = $fold_ppl - $original; print('%.0f%%' % (100 * (1 - ($ppl - $original) / g)) if g > 0 else '(no gap)')")
    fi
    echo "| $model | $kv0 -> $kv | $(basename "$(dirname "$other")")/$(basename "$other") | $original | \`$passes\` | $ppl | $kl | $closed |"
  done
done
