#!/usr/bin/env bash
# The README's test command (and what .ci/run calls): installs the dependencies, builds kvfold,
# and runs every test, the fuzzers included. Needs ../shared beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure
# Skipped tests say why (CTest itself only prints "Skipped").
grep -h "^SKIPPED:" build/Testing/Temporary/LastTest.log || true
# The numeric tests again on both OpenBLAS kernel families, whatever this CPU is: Debian's
# OpenBLAS 0.3.21 runs HASWELL kernels on AVX2 CPUs and falls back to PRESCOTT on AVX-512 CPUs
# it does not know. Every tolerance must hold on both (the results agree to float rounding).
for core in HASWELL PRESCOTT; do
  echo "numeric tests with OPENBLAS_CORETYPE=$core"
  OPENBLAS_CORETYPE=$core ctest --test-dir build --output-on-failure -R '^(runtime_check|converter|tools)$'
done
