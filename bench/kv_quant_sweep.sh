#!/usr/bin/env bash
# KV-cache quantization on every shared model (issue 5): ppl and KL against the full cache vs the
# mean bits per KV element (scales counted), W = 256, positions 128..255 of 32 evaluation
# windows. Schemes: FP8 static (kv-scales), RTN per-token, KIVI-style, MiKV at several budgets
# (4-bit, 2-bit, and 4-bit keys with 2-bit values),
# MiKV's selection with the low-precision tokens evicted instead (H2O), MiKV with static
# per-channel key ranges (kv-mixed table) and after kv-balance. Prints markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for model in "${shared_models[@]}"; do
  src="$shared/models/$model"
  model_texts "$model"
  $kvfold convert "$src" --calib "$calib" --passes 'kv-scales' -o "$work/$model-scales" --quiet --threads 2 >/dev/null
  $kvfold convert "$src" --calib "$calib" --passes 'kv-mixed<bits=2,keep=0.2>' -o "$work/$model-mixed" --quiet --threads 2 >/dev/null
  $kvfold convert "$src" --calib "$calib" --passes 'kv-balance' -o "$work/$model-balanced" --quiet --threads 2 >/dev/null
  args=("$src" 'evict<keep=1>' "$work/$model-scales" 'quant<scheme=fp8>')
  for b in 8 4 3 2; do args+=("$src" "quant<scheme=rtn,bits=$b>"); done
  for b in 4 2; do args+=("$src" "quant<scheme=kivi,bits=$b>"); done
  for b in 4 2; do for k in 0.1 0.2 0.3 0.5; do args+=("$src" "quant<scheme=mikv,bits=$b,keep=$k>"); done; done
  for k in 0.1 0.2 0.3; do args+=("$src" "quant<scheme=mikv,key-bits=4,value-bits=2,keep=$k>"); done
  for k in 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8; do args+=("$src" "quant<scheme=mikv,bits=0,keep=$k>"); done
  args+=("$work/$model-mixed" "quant<scheme=mikv,table=$work/$model-mixed/kv_mixed_precision.json>")
  args+=("$work/$model-balanced" 'quant<scheme=rtn,bits=2>' "$work/$model-balanced" 'quant<scheme=mikv,bits=2,keep=0.2>')
  build/bin/bench_kv_cache_sweep "$src" "$eval" --windows 32 --threads 2 "${args[@]}" > "$work/$model.jsonl"
  python3 - "$model" "$work/$model.jsonl" "$work" <<'PY'
import json, sys
model, path, work = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(path)]
def label(r):
    spec = r["spec"].replace(work + "/" + model + "-mixed/", "")
    where = r["model"].replace(work + "/" + model + "-", "")
    return spec + ("" if where.startswith("/") or where == r["model"] else " on the %s model" % where)
print("### %s\n" % model)
print("| cache | bits/element | ppl | KL to full cache | top-1 vs full cache |")
print("|---|---|---|---|---|")
for r in rows:
    print("| `%s` | %.2f | %.3f | %.4f | %.2f%% |" % (label(r), r["bits"], r["ppl"], r["kl"], 100 * r["top1"]))
# MiKV against evicting the same (low-importance) tokens, at equal memory: interpolate the
# eviction curve (bits=0 rows) at each MiKV point's bits.
evict = sorted((r["bits"], r["kl"], r["ppl"]) for r in rows if "scheme=mikv,key-bits=0" in r["spec"])
def at(bits, i):
    for (b0, *v0), (b1, *v1) in zip(evict, evict[1:]):
        if b0 <= bits <= b1:
            t = (bits - b0) / (b1 - b0)
            return v0[i] + t * (v1[i] - v0[i])
    return None
mikv = [r for r in rows if "scheme=mikv" in r["spec"] and "key-bits=0" not in r["spec"] and r["model"].endswith(model)]
wins = 0; compared = 0
for r in mikv:
    kl, ppl = at(r["bits"], 0), at(r["bits"], 1)
    if kl is None: continue
    compared += 1; wins += r["kl"] < kl
    print("\nMiKV `%s` at %.2f bits: KL %.4f, ppl %.3f; eviction of the same tokens at equal memory: KL %.4f, ppl %.3f" % (r["spec"], r["bits"], r["kl"], r["ppl"], kl, ppl), end="")
print("\n\nMiKV beats eviction at equal memory (KL) in %d of %d points.\n" % (wins, compared))
PY
done
