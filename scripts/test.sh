#!/usr/bin/env bash
# The README's test command (and what .ci/run calls): installs the dependencies, builds kvfold,
# and runs every test, the fuzzers included. Needs ../shared beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure
