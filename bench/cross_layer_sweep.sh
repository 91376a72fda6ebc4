#!/usr/bin/env bash
# Cross-layer KV sharing quality on every shared model (issue 7): MLKV at N = 1, 2, 3 KV layers
# and LCKV at w = 0, 1, 2 warm-up layers (w + 1 KV layers), each with the reference repos' mean
# initialisation and kvfold's calibrated fit, alone and after gqa-svd halving the KV heads.
# Calibrate on the first CALIB_TOKENS (16384) tokens of the model's calibration text, evaluate
# on its evaluation text (kvfold-ppl-v1, W = 256, the first WINDOWS (32) windows) against the
# original. LCKV is evaluated exactly (token by token); the
# last column is the paper's parallel encoding with m = 9 iterations (forward_passes 7 +
# backward_passes 2) measured against it. Prints one markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
windows="${WINDOWS:-32}"
calib_tokens="${CALIB_TOKENS:-16384}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "| model | pipeline | KV layers | KV heads | ppl | KL vs original | top-1 vs original | KV bytes/token | convert s | sharing pass s | LCKV parallel m=9: KL vs exact |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for model in "${shared_models[@]}"; do
  src="$shared/models/$model"
  model_texts "$model"
  info=$($kvfold inspect "$src" --json)
  kv0=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['num_key_value_heads'])" "$info")
  layers=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['num_hidden_layers'])" "$info")
  bytes0=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['kv_cache_bytes_per_token'])" "$info")
  json=$($kvfold eval "$src" --text "$eval" --max-windows "$windows" --threads 2 --quiet --json)
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print('| $model | original | $layers | $kv0 | %.4f |  |  | $bytes0 |  |  |  |' % d['ppl'])" "$json"
  for prefix in "" "gqa-svd<kv-heads=$((kv0 / 2)),refit=none>,"; do
    for shape in "mlkv<kv-layers=1" "mlkv<kv-layers=2" "mlkv<kv-layers=3" "lckv<warmup=0" "lckv<warmup=1" "lckv<warmup=2"; do
      for init in mean calib; do
        pipeline="$prefix$shape,init=$init>"
        out="$work/out"
        /usr/bin/time -f "%e" -o "$work/time" $kvfold convert "$src" --calib "$calib" --calib-tokens "$calib_tokens" \
          --passes "$pipeline" -o "$out" --force --quiet --threads 2 --time-passes 2>"$work/passes" >/dev/null
        secs=$(cat "$work/time")
        pass_secs=$(awk '/time  (mlkv|lckv)/ {print $3}' "$work/passes")
        extra=()
        [[ "$shape" == lckv* ]] && extra=(--lckv-iterations 9)
        json=$($kvfold eval "$out" --text "$eval" --max-windows "$windows" --threads 2 --quiet --json --compare "$src" "${extra[@]}")
        python3 - "$json" "$model" "$pipeline" "$out" "$secs" "$pass_secs" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); model, pipeline, out, secs, pass_secs = sys.argv[2:7]
config = json.load(open(out + "/config.json"))
meta = json.load(open(out + "/kvfold.json"))
kv_layers = config.get("num_key_value_layers", config["num_hidden_layers"])
parallel = "%.4f" % d["lckv_parallel"]["kl_from_sequential"] if "lckv_parallel" in d else ""
print("| %s | `%s` | %s | %s | %.4f | %.4f | %.2f%% | %s | %s | %s | %s |" % (
    model, pipeline, kv_layers, config["num_key_value_heads"], d["ppl"], d["compare"]["kl"],
    100 * d["compare"]["top1_agreement"], meta["kv_cache_bytes_per_token"]["after"], secs, pass_secs, parallel))
PY
      done
    done
  done
done
