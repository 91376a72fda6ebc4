#!/usr/bin/env bash
# gqa-svd's o_proj refit (issue 16): rope=reconstruct and rope=commute without it (refit=none),
# and commute with refit=o at ridge=0 (no ridge term) and ridge=auto (chosen
# on held-out calibration windows), alone and with value-weight=output, at 1/2 and 1/4 of the KV
# heads on the shared models. Calibration and evaluation texts as bench/gqa_quality.sh
# (kvfold-ppl-v1, W = 256, 65536 calibration tokens, --calibrate-on converted); each conversion is
# scored on 64 windows of the evaluation text and on 64 windows of the calibration text (the first
# 16384 of the tokens it was calibrated on). "pass s" is the pass's time (folds, the two context
# runs and the refit) out of the whole convert's. Prints one markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
$kvfold --version | sed 's/^/# /'

score() {  # text -> "ppl KL"
  $kvfold eval "$work/out" --text "$1" --max-windows 64 --threads 2 --quiet --json --compare "$src" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f %.4f' % (d['ppl'], d['compare']['kl']))"
}

echo "| model | KV heads | method | ppl (eval) | KL (eval) | ppl (calib) | KL (calib) | pass s / convert s |"
echo "|---|---|---|---|---|---|---|---|"
for model in ${MODELS:-stories260K micro-mha mini-mha}; do
  src="$shared/models/$model"
  model_texts "$model"
  kv0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
  for divisor in 2 4; do
    kv=$((kv0 / divisor))
    for method in "rope=reconstruct,refit=none" "rope=commute,refit=none" "refit=o,ridge=0" "refit=o" "refit=o,value-weight=output"; do
      /usr/bin/time -f "%e" -o "$work/time" $kvfold convert "$src" --calib "$calib" \
        --passes "gqa-svd<kv-heads=$kv,$method>" -o "$work/out" --force --quiet --threads 2 --time-passes \
        2>"$work/passes" >/dev/null
      pass_s=$(awk '/time  gqa-/ {print $3}' "$work/passes")
      read -r ppl_e kl_e <<< "$(score "$eval")"
      read -r ppl_c kl_c <<< "$(score "$calib")"
      echo "| $model | $kv0 -> $kv | $method | $ppl_e | $kl_e | $ppl_c | $kl_c | $pass_s / $(cat "$work/time") |"
    done
  done
done
