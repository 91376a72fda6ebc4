#!/usr/bin/env bash
# KV-head compression quality on every shared model (issue 4): calibrate on the model's
# calibration text, evaluate on its evaluation text (kvfold-ppl-v1, W = 256, 64 windows), at
# 1/2, 1/4 and 1/8 of the KV heads where they divide, for gqa-meanpool and gqa-svd in both key
# modes, each with the plain (weight=none) and the query-weighted (weight=query) objective. Prints one markdown table; conversion wall time and peak RSS come from /usr/bin/time.
# CALIBRATE_ON=source|converted (default converted) is passed to --calibrate-on; the table in
# docs/results.md (issue 4) was measured before kvfold calibrated on converted layers: source.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

row() {  # model kv method out_dir convert_seconds rss_kb decomposition_seconds
  local json
  json=$($kvfold eval "$4" --text "$eval" --max-windows 64 --threads 2 --quiet --json --compare "$src")
  python3 - "$json" "$@" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); model, kv, method, out, secs, rss, dec = sys.argv[2:9]
kvb = json.load(open(out + "/kvfold.json"))["kv_cache_bytes_per_token"]["after"] if method != "original" else ""
share = "" if dec == "" else "%.1f%%" % (100 * float(dec) / float(secs))
print("| %s | %s | %s | %.4f | %s | %s | %s | %s | %s | %s |" % (
    model, kv, method, d["ppl"],
    "" if method == "original" else "%.4f" % d["compare"]["kl"],
    "" if method == "original" else "%.2f%%" % (100 * d["compare"]["top1_agreement"]),
    kvb, secs, "" if rss == "" else "%.0f" % (int(rss) / 1024), share))
PY
}

echo "| model | KV heads | method | ppl | KL vs original | top-1 vs original | KV bytes/token | convert s | peak RSS MiB | pass share of convert |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for model in "${shared_models[@]}"; do
  src="$shared/models/$model"
  model_texts "$model"
  kv0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
  bytes0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['kv_cache_bytes_per_token'])")
  json=$($kvfold eval "$src" --text "$eval" --max-windows 64 --threads 2 --quiet --json)
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print('| $model | $kv0 | original | %.4f |  |  | $bytes0 |  |  |  |' % d['ppl'])" "$json"
  for divisor in 2 4 8; do
    (( kv0 % divisor == 0 )) || continue
    kv=$((kv0 / divisor))
    for method in "gqa-meanpool<kv-heads=$kv>" \
                  "gqa-svd<kv-heads=$kv,refit=none,rope=commute,weight=none>" "gqa-svd<kv-heads=$kv,refit=none,rope=commute,weight=query>" \
                  "gqa-svd<kv-heads=$kv,refit=none,rope=reconstruct,weight=none>" "gqa-svd<kv-heads=$kv,refit=none,rope=reconstruct,weight=query>"; do
      out="$work/out"
      /usr/bin/time -f "%e %M" -o "$work/time" $kvfold convert "$src" --calib "$calib" --passes "$method" \
        -o "$out" --force --quiet --threads 2 --time-passes --calibrate-on "${CALIBRATE_ON:-converted}" \
        2>"$work/passes" >/dev/null
      read -r secs rss < "$work/time"
      dec=$(awk '/time  gqa-/ {print $3}' "$work/passes")
      row "$model" "$kv" "$method" "$out" "$secs" "$rss" "$dec"
    done
  done
done
