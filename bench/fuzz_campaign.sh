#!/usr/bin/env bash
# The fuzz campaign behind docs/results.md ("Fuzzing"): every libFuzzer target runs from its
# checked-in seeds for SECONDS (default 600), then the inputs that found new coverage are merged
# into fuzz/corpus/<target> (libFuzzer -merge=1 keeps only those), ready to commit.
# Usage: bench/fuzz_campaign.sh [SECONDS] [BUILD_DIR] [TARGET ...]   (default: every target)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-600}"
build="${2:-$src/build-fuzz}"
CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DKVFOLD_FUZZ_ONLY=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" >/dev/null
echo "clang: $(clang++ --version | head -1)"
printf '%-20s %8s %12s %10s %8s %s\n' target seconds executions exec/s "seeds+" result
targets=(safetensors_header:safetensors model_config:config safetensors_index:index
         kvfold_tables:tables checkpoint:checkpoint token_ids:token_ids gguf_header:gguf)
shift $(($# < 2 ? $# : 2))
for target in "${targets[@]}"; do
  name="${target%%:*}"; seeds="$src/fuzz/corpus/${target#*:}"
  if (($#)) && [[ " $* " != *" $name "* ]]; then continue; fi
  work="$build/campaign-$name"; rm -rf "$work"; mkdir -p "$work"
  before=$(ls "$seeds" | wc -l)
  rc=0
  "$build/bin/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/crash-$name-" "$work" "$seeds" >"$build/campaign-$name.log" 2>&1 || rc=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$build/campaign-$name.log" | grep -oE '[0-9]+$' || echo 0)
  result=clean
  [ "$rc" -eq 0 ] || result="FAILED (exit $rc; see $build/campaign-$name.log)"
  "$build/bin/fuzz_$name" -merge=1 "$seeds" "$work" >/dev/null 2>&1 || true
  after=$(ls "$seeds" | wc -l)
  printf '%-20s %8s %12s %10s %8s %s\n' "$name" "$seconds" "$runs" "$((runs / seconds))" "$((after - before))" "$result"
done
