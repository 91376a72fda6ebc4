#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (a separate build tree) and runs each briefly from the
# seed corpus in fuzz/corpus. Usage: scripts/fuzz.sh [--built] BUILD_DIR [SECONDS_PER_TARGET]
# --built: BUILD_DIR already holds them (CTest fuzz: the tree scripts/sanitize_readers.sh built).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
built=false
if [ "${1:-}" = --built ]; then built=true; shift; fi
build="$1"
seconds="${2:-${KVFOLD_FUZZ_SECONDS:-10}}"  # CI replays the seeds and fuzzes briefly; campaigns: bench/fuzz_campaign.sh
if ! $built; then
  CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DKVFOLD_FUZZ_ONLY=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" >/dev/null
fi
for target in safetensors_header:safetensors model_config:config safetensors_index:index \
              kvfold_tables:tables checkpoint:checkpoint token_ids:token_ids gguf_header:gguf; do
  name="${target%%:*}"; seeds="${target#*:}"
  work="$build/corpus-$name"      # new inputs go here, never into the checked-in seeds
  mkdir -p "$work"
  echo "fuzz_$name: ${seconds}s"
  log="$build/fuzz_$name.log"
  rc=0
  "$build/bin/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/" "$work" "$src/fuzz/corpus/$seeds" \
    >"$log" 2>&1 || rc=$?
  grep -E "stat::number_of_executed_units" "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz_$name failed (exit $rc); the crashing input is in $build/"
    exit 1
  fi
done
