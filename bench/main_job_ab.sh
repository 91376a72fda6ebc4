#!/usr/bin/env bash
# The README's main job (scripts/run-default.sh: convert mini-mha to 2 KV heads with the report
# and its eval, then eval --compare on 64 windows) timed with two builds, A/B alternated (A, B,
# A, B, ...), with kvfold's default thread count, as a user runs it. Set-up and build are left
# out. Each row: wall, user and system CPU seconds, peak RSS, and for eval the perplexity and
# delta NLL it prints.
#   bench/main_job_ab.sh BUILD_B BUILD_A [ROUNDS]   (default 2 rounds)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
source "$src/bench/pair_order.sh"
shared="${KVFOLD_SHARED:-$src/../shared}"
builds=("$2" "$1") rounds="${3:-2}"
model="$shared/models/mini-mha" calib="$shared/text/wikitext-2/valid.tokens.txt"
text="$shared/text/wikitext-2/test.raw.txt"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${builds[1]}/bin/kvfold" --version | sed 's/^/# /'
echo "| command | build | wall s | user s | sys s | peak RSS MiB | ppl | delta NLL |"
echo "|---|---|---|---|---|---|---|---|"
row() {  # COMMAND LABEL [PPL DELTA]
  awk -v c="$1" -v l="$2" -v p="${3:-}" -v d="${4:-}" \
    '{printf "| %s | %s | %.2f | %.2f | %.2f | %.0f | %s | %s |\n", c, l, $1, $2, $3, $4 / 1024, p, d}' \
    "$work/t"
}
for ((r = 0; r < rounds; ++r)); do
  for i in $(PairOrder "$r"); do
    kvfold="${builds[$i]}/bin/kvfold" label=$([ "$i" = 0 ] && echo "A ${builds[0]}" || echo "B ${builds[1]}")
    /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$kvfold" convert "$model" --calib "$calib" \
      --passes 'gqa-svd<kv-heads=2,rope=commute>' -o "$work/model" --force --quiet \
      --report "$work/report.html" --eval "$text" >/dev/null
    row convert "$label"
    /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$kvfold" eval "$work/model" --text "$text" \
      --max-windows 64 --compare "$model" --quiet >"$work/eval.txt"
    row "eval --compare" "$label" "$(awk '$1 == "ppl" {print $2; exit}' "$work/eval.txt")" \
      "$(awk '$1 == "delta" {print $3; exit}' "$work/eval.txt")"
  done
done
