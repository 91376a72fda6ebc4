#!/usr/bin/env bash
# What --report adds to a conversion's wall time on mini-mha (issue 8's bar: under 10%).
# Alternates runs without and with --report (no --eval: validation is a separate, optional cost)
# and prints the median of each.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${KVFOLD_SHARED:-../shared}"
runs="${RUNS:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
convert=(build/bin/kvfold convert "$shared/models/mini-mha" --calib "$shared/text/wikitext-2/valid.tokens.txt"
         --passes 'gqa-svd<kv-heads=2,refit=none>' -o "$work/out" --force --quiet --threads 2)
for i in $(seq "$runs"); do
  /usr/bin/time -f "%e" -a -o "$work/plain" "${convert[@]}" >/dev/null
  /usr/bin/time -f "%e" -a -o "$work/report" "${convert[@]}" --report "$work/report.html" >/dev/null
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
plain=$(median "$work/plain"); report=$(median "$work/report")
echo "| runs | convert median (s) | convert --report median (s) | added |"
echo "|---|---|---|---|"
awk -v n="$runs" -v p="$plain" -v r="$report" 'BEGIN {printf "| %d | %.2f | %.2f | %+.1f%% |\n", n, p, r, 100 * (r - p) / p}'
