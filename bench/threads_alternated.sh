#!/usr/bin/env bash
# Issue 27: 1 and 2 threads alternated (1 2 2 1 in each round) at the default sizes, for the
# shared-model commands whose ratio was near 1.7 in one run per row (bench/cpu_time.sh with
# TOKENS=65536 WINDOWS=all): the stories models' eval of the whole TinyStories eval text (4-bit
# RTN cache, as cpu_time.sh) and the WikiText models' convert (65536 tokens, half the KV heads).
# Prints "model command threads wall_s user_s" per run, then the medians and their ratio.
#   bench/threads_alternated.sh [BUILD]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
build="${1:-build}" S="$shared" work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$build/bin/kvfold" --version | sed -n 2p  # the BLAS core
ev() { /usr/bin/time -f "$1 eval $2 %e %U" "$build/bin/kvfold" eval $S/models/$1 --text $S/text/tinystories/eval.txt --kv-cache 'quant<scheme=rtn,bits=4>' --quiet --threads $2 >/dev/null; }
cv() { /usr/bin/time -f "$1 convert $2 %e %U" "$build/bin/kvfold" convert $S/models/$1 --calib $S/text/wikitext-2/valid.tokens.txt --calib-tokens 65536 --passes "gqa-svd<kv-heads=$3>,kv-scales" -o "$work/out" --force --quiet --threads $2 >/dev/null; }
{
  for r in 1 2 3; do for t in 1 2 2 1; do ev stories260K $t; ev stories260K-mha $t; done; done
  for r in 1 2; do for t in 1 2 2 1; do cv mini-mha-bf16-sharded $t 4; cv micro-mha $t 2; done; done
} 2>&1 | tee "$work/log"
python3 - "$work/log" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 5:
        runs[(p[0], p[1], p[2])].append(float(p[3]))
for (model, command, threads) in sorted(runs):
    if threads == "1":
        one, two = (statistics.median(runs[(model, command, t)]) for t in "12")
        print(f"| {model} | {command} | {one:.2f} | {two:.2f} | {one / two:.2f}x |")
PY
