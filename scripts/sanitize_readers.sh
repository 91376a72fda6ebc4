#!/usr/bin/env bash
# CTest `sanitize_readers`: the readers of untrusted input (formats/, calib/: safetensors, config,
# tokenizer.json, .npy and JSON Lines calibration data) and their unit tests built once more with
# clang under AddressSanitizer and UBSan, in a tree of their own without LibTorch, and run. An
# over-read like the .npy shape overflow of issue 23 fails here at once. The same tree holds the
# libFuzzer targets (CTest fuzz runs them: scripts/fuzz.sh --built), so formats/ is built with
# clang once, not twice. -O0 rather than -O1 under the sanitizers: this script, build and tests,
# took 278 s of CPU instead of 382 s; CTest's brief fuzzing runs about half as many inputs
# (campaigns build their own optimised tree: bench/fuzz_campaign.sh).
# Usage: scripts/sanitize_readers.sh BUILD_DIR SHARED_DIR
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="$1"; shared="$(cd "$2" && pwd)"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DKVFOLD_READERS_ONLY=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DKVFOLD_SHARED_DIR="$shared" >/dev/null
cmake --build "$build" >/dev/null  # the tests, the spm shim and the fuzz targets
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
for t in formats calib; do
  echo "test_$t under ASan and UBSan"
  "$build/bin/test_$t" --order rand --rng-seed 1 ~[.] | tail -n 3
done
