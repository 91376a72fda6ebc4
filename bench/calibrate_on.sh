#!/usr/bin/env bash
# What calibrating each layer on the converted layers below it (--calibrate-on converted, the
# default) changes against calibrating on the source model (--calibrate-on source, kvfold's
# earlier behaviour): gqa-svd's default objective at 1/2 and 1/4 of the KV heads on every
# shared model. Calibration and evaluation as in bench/gqa_quality.sh (65536 tokens; 64 windows
# of 256; KL and top-1 against the original).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "| model | pipeline | calibrated on | ppl | KL vs original | top-1 vs original |"
echo "|---|---|---|---|---|---|"
for model in "${shared_models[@]}"; do
  src="$shared/models/$model"
  model_texts "$model"
  kv0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
  for divisor in 2 4; do
    (( kv0 % divisor == 0 )) || continue
    for activations in source converted; do
      passes="gqa-svd<kv-heads=$((kv0 / divisor)),refit=none>"
      $kvfold convert "$src" --calib "$calib" --passes "$passes" -o "$work/out" --force --quiet --threads 2 \
        --calibrate-on "$activations" >/dev/null
      $kvfold eval "$work/out" --text "$eval" --max-windows 64 --threads 2 --quiet --json --compare "$src" |
        python3 -c "import json,sys; d=json.load(sys.stdin); print('| $model | $passes | $activations | %.4f | %.4f | %.2f%% |' % (d['ppl'], d['compare']['kl'], 100 * d['compare']['top1_agreement']))"
    done
  done
done
