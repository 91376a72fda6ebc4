#!/usr/bin/env bash
# gqa-svd's value objective (issue 16): plain value energy (value-weight=none, the default) vs the
# error of what W_O makes of the values (value-weight=output), at 1/2 and 1/4 of the KV heads on
# the shared models (rope=commute, query-weighted keys in both). Calibration and evaluation texts
# as bench/gqa_quality.sh: kvfold-ppl-v1, W = 256, 64 evaluation windows, 65536 calibration
# tokens (--calibrate-on converted, the default). Prints one markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "| model | KV heads | value-weight | ppl | KL vs original | top-1 vs original |"
echo "|---|---|---|---|---|---|"
for model in stories260K micro-mha mini-mha; do
  src="$shared/models/$model"
  model_texts "$model"
  kv0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
  for divisor in 2 4; do
    kv=$((kv0 / divisor))
    for weight in none output; do
      $kvfold convert "$src" --calib "$calib" --passes "gqa-svd<kv-heads=$kv,refit=none,value-weight=$weight>" -o "$work/out" \
        --force --quiet --threads 2 >/dev/null
      $kvfold eval "$work/out" --text "$eval" --max-windows 64 --threads 2 --quiet --json --compare "$src" |
        python3 -c "import json,sys; d=json.load(sys.stdin); print('| $model | $kv0 -> $kv | $weight | %.4f | %.4f | %.2f%% |' % (d['ppl'], d['compare']['kl'], 100 * d['compare']['top1_agreement']))"
    done
  done
done
