#!/usr/bin/env bash
# Issue 27: wall, user and system CPU time and peak RSS of a conversion (gqa-svd to half the KV
# heads with the default o_proj refit, then kv-scales; 16384 calibration tokens) and of an eval
# --compare (16 windows), with 1 and 2 threads, on every shared model. With a second build it
# runs A/B alternated (A B, B A, ...: bench/pair_order.sh): each row is the median of ROUNDS runs per build.
#   bench/cpu_time.sh BUILD_B [BUILD_A] [ROUNDS]   (BUILD_A: the build to compare against;
#   rows say A for it and "B (new)" for BUILD_B; "this" with one build)
# TOKENS= calibration tokens (default 16384); WINDOWS= eval windows (default 16; "all": the
# whole evaluation text, as `kvfold eval` does by default).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
source bench/pair_order.sh
builds=("$1") rounds=${3:-3}
[ -n "${2:-}" ] && builds=("$2" "$1")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${builds[0]}/bin/kvfold" --version | sed -n 2p  # the BLAS core
windows=(--max-windows "${WINDOWS:-16}")
[ "${WINDOWS:-}" != all ] || windows=()
run() {  # BUILD WHAT THREADS MODEL -> "wall user sys rss_mib"
  local kvfold="$1/bin/kvfold" what=$2 threads=$3 src="$shared/models/$4"
  model_texts "$4"
  if [ "$what" = convert ]; then
    local kv0
    kv0=$("$kvfold" inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
    /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$kvfold" convert "$src" --calib "$calib" \
      --calib-tokens "${TOKENS:-16384}" --passes "gqa-svd<kv-heads=$((kv0 / 2))>,kv-scales" -o "$work/out" \
      --force --quiet --threads "$threads" >/dev/null
  else
    /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$kvfold" eval "$src" --text "$eval" \
      "${windows[@]}" --kv-cache 'quant<scheme=rtn,bits=4>' --quiet --threads "$threads" >/dev/null
  fi
  awk '{printf "%s %s %s %.0f\n", $1, $2, $3, $4 / 1024}' "$work/t"
}
echo "| model | command | threads | build | wall s | user s | sys s | sys share | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for model in "${shared_models[@]}"; do
  for what in convert eval; do
    for threads in 1 2; do
      for i in "${!builds[@]}"; do : >"$work/rows.$i"; done
      for ((r = 0; r < rounds; ++r)); do
        for i in $(PairOrder "$r" "${#builds[@]}"); do
          run "${builds[$i]}" "$what" "$threads" "$model" >>"$work/rows.$i"
        done
      done
      for i in "${!builds[@]}"; do
        label="this"
        [ "${#builds[@]}" -eq 2 ] && label=$([ "$i" -eq 1 ] && echo "B (new)" || echo "A")
        sort -n "$work/rows.$i" | awk -v m="$model" -v w="$what" -v t="$threads" \
          -v b="$label" -v n="$rounds" 'NR == int((n + 1) / 2) {
            printf "| %s | %s | %s | %s | %.2f | %.2f | %.2f | %.0f%% | %s |\n", m, w, t, b, $1, $2, $3,
              100 * $3 / ($2 + $3), $4 }'
      done
    done
  done
done
