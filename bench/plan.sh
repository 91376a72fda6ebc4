#!/usr/bin/env bash
# The KV budget planner against single methods (issue 16): on every shared model, kvfold plan at
# budgets 50%, 25%, 12.5% and 6.25% of the 16-bit KV cache (calibration text: 16384 tokens to
# convert, the next 8 windows to score), then, on 32 windows of the *evaluation* text (positions
# 128-255, KL against the original's full cache), the planned combination next to the best single
# method that fits the same budget: the best by evaluation KL (an oracle choice, the strongest
# baseline) among gqa-svd alone, mlkv alone, a cache quantization alone and eviction alone, every
# setting the planner also tries. Prints one markdown table; the planner's wall time per model.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
$kvfold --version | sed 's/^/# /'
budgets=0.5,0.25,0.125,0.0625
echo "| model | budget | plan (passes \| --kv-cache) | bytes | KL (eval) | best single method | bytes | KL (eval) | plan better? |"
echo "|---|---|---|---|---|---|---|---|---|"
for model in ${MODELS:-${shared_models[@]}}; do
  src="$shared/models/$model"
  model_texts "$model"
  rm -rf "$work"/c*  # the previous model's conversions
  start=$(date +%s.%N)
  $kvfold plan "$src" --calib "$calib" --budget "$budgets" --json --threads 2 --quiet > "$work/plan.json"
  plan_s=$(python3 -c "import sys; print('%.0f' % ($(date +%s.%N) - $start))")
  # The conversions the plans and the single methods need, as the planner made them.
  python3 - "$work" "$src" <<'PY' > "$work/pairs"
import json, sys
work, src = sys.argv[1], sys.argv[2]
d = json.load(open(work + "/plan.json"))
singles = [c for c in d["candidates"] if c["family"] in ("heads", "cross-layer", "quant", "evict")]
chosen = [p for p in d["plans"] if p["passes"] is not None]
dirs = {}
for c in singles + chosen:
    if c["passes"] and c["passes"] not in dirs:
        dirs[c["passes"]] = "%s/c%d" % (work, len(dirs))
json.dump(dirs, open(work + "/dirs.json", "w"))
for c in singles + chosen:
    print(dirs.get(c["passes"], src), c["kv_cache"] or "full")
PY
  python3 -c "import json; [print(p + '\t' + d) for p, d in json.load(open('$work/dirs.json')).items()]" |
    while IFS=$'\t' read -r passes dir; do
      $kvfold convert "$src" --calib "$calib" --calib-tokens 16384 --passes "$passes" -o "$dir" --quiet --threads 2 >/dev/null
    done
  # shellcheck disable=SC2046
  build/bin/bench_kv_cache_sweep "$src" "$eval" --windows 32 --threads 2 $(tr '\n' ' ' < "$work/pairs") > "$work/eval.jsonl"
  python3 - "$work" "$src" "$model" "$plan_s" <<'PY'
import json, sys
work, src, model, plan_s = sys.argv[1:5]
d = json.load(open(work + "/plan.json"))
dirs = json.load(open(work + "/dirs.json"))
# Rows come in the order of the pairs asked for (the sweep prints specs in canonical form).
pairs = [tuple(line.rstrip("\n").split(" ", 1)) for line in open(work + "/pairs")]
kl = {pair: json.loads(row)["kl"] for pair, row in zip(pairs, open(work + "/eval.jsonl"))}
def eval_kl(c):
    return kl[(dirs.get(c["passes"], src), c["kv_cache"] or "full")]
singles = [c for c in d["candidates"] if c["family"] in ("heads", "cross-layer", "quant", "evict")]
def name(c):
    return "%s \\| %s" % (c["passes"] or "(none)", c["kv_cache"] or "(full)")
for p in d["plans"]:
    fits = [c for c in singles if c["bytes_fraction"] <= p["budget"] * (1 + 1e-12)]
    best = min(fits, key=eval_kl) if fits else None
    if p["passes"] is None:
        plan_cells = "(nothing fits) | | "
        verdict = "no plan"
    else:
        plan_cells = "%s | %.4f | %.4f" % (name(p), p["bytes_fraction"], eval_kl(p))
    if best is None:
        best_cells = "(none fits) | | "
        verdict = "yes (no single method fits)" if p["passes"] is not None else verdict
    else:
        best_cells = "%s (%s) | %.4f | %.4f" % (name(best), best["family"], best["bytes_fraction"], eval_kl(best))
        if p["passes"] is not None:
            a, b = eval_kl(p), eval_kl(best)
            verdict = "yes" if a < b else ("equal" if a == b else "no")
    print("| %s | %g | %s | %s | %s |" % (model, p["budget"], plan_cells, best_cells, verdict))
print("| %s | planner wall time | %s s |  |  |  |  |  |  |" % (model, plan_s))
PY
done
