#!/usr/bin/env bash
# The heal pass (issue 28): gqa-svd at 1/2 and 1/4 of the KV heads with its default o_proj refit,
# then the same followed by `heal` with each target (HEAL lists the heal specs, space-separated),
# on every shared model. Calibration and evaluation texts as bench/gqa_quality.sh (65536
# calibration tokens, --calibrate-on converted); each output is scored on 64 windows
# (kvfold-ppl-v1, W = 256) of its evaluation text, which the calibration never saw, with the KL
# against the original on the same windows. "gap closed" = 1 - (ppl - original) / (ppl of the
# fold without heal - original). Wall time and peak RSS of the whole `kvfold convert`.
# Prints one markdown table. MODELS overrides the model list.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=${KVFOLD:-build/bin/kvfold}
heal="${HEAL:-heal heal<target=trajectory>}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
$kvfold --version | sed 's/^/# /'

score() {  # model folder -> "ppl KL"
  $kvfold eval "$1" --text "$eval" --max-windows 64 --threads 2 --quiet --json --compare "$src" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f %.4f' % (d['ppl'], d['compare']['kl']))"
}

echo "| model | KV heads | original ppl | passes | ppl | KL | gap closed | convert s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for model in ${MODELS:-${shared_models[*]}}; do
  src="$shared/models/$model"
  model_texts "$model"
  kv0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
  original=$($kvfold eval "$src" --text "$eval" --max-windows 64 --threads 2 --quiet --json |
    python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['ppl'])")
  for divisor in 2 4; do
    kv=$((kv0 / divisor))
    [ "$kv" -ge 1 ] || continue
    fold_ppl=""
    heals=()
    for h in $heal; do heals+=("gqa-svd<kv-heads=$kv>,$h"); done
    for passes in "gqa-svd<kv-heads=$kv>" "${heals[@]}"; do
      /usr/bin/time -f "%e %M" -o "$work/time" $kvfold convert "$src" --calib "$calib" \
        --passes "$passes" -o "$work/out" --force --quiet --threads 2 >/dev/null
      read -r wall rss_kb < "$work/time"
      read -r ppl kl <<< "$(score "$work/out")"
      if [ -z "$fold_ppl" ]; then
        fold_ppl=$ppl; closed="-"
      else  # a lossless fold leaves no gap
        closed=$(python3 -c "g = $fold_ppl - $original; print('%.0f%%' % (100 * (1 - ($ppl - $original) / g)) if g > 0 else '(no gap)')")
      fi
      echo "| $model | $kv0 -> $kv | $original | \`$passes\` | $ppl | $kl | $closed | $wall | $((rss_kb / 1024)) |"
    done
  done
done
