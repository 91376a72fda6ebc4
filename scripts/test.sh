#!/usr/bin/env bash
# The README's test command (and what .ci/run calls): installs the dependencies, builds kvfold,
# and runs every test, the fuzzers, the sanitizer build of the readers and the format check
# included. Needs ../shared beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
echo "test.sh: set-up and build took $((SECONDS - start)) s"
# Every entry at once on every core: the unit tests are one CTest entry per source file, most of
# them single-threaded for long stretches (ctest runs the known-long ones first, by COST).
ctest --test-dir build --output-on-failure -j "$(nproc)"
# Skipped tests say why (CTest itself only prints "Skipped").
grep -h "^SKIPPED:" build/Testing/Temporary/LastTest.log || true
# The tests whose numbers go through BLAS (label `blas`) again under the other OpenBLAS kernel
# family: with FMA (Haswell, Zen, SkylakeX) the native run covers one, PRESCOTT (SSE3, no FMA:
# what Debian's OpenBLAS 0.3.21 falls back to on AVX-512 CPUs it does not know) the other. Every
# tolerance must hold on both (the results agree to float rounding). tests/CMakeLists.txt names
# the few numeric tests that run once, and why; cases tagged [once] (a result compared with itself
# computed again by the same kernels) are left out of this pass, each with its reason beside it.
native="$(python3 scripts/openblas_core.py)"
other=$([ "$native" = Prescott ] && echo HASWELL || echo PRESCOTT)
echo "numeric tests again with OPENBLAS_CORETYPE=$other (the native core is $native)"
OPENBLAS_CORETYPE=$other KVFOLD_TEST_EXCLUDE_TAG=once \
  ctest --test-dir build --output-on-failure -j "$(nproc)" -L '^blas$'
echo "test.sh: $((SECONDS - start)) s in all"
