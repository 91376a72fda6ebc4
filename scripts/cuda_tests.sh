#!/usr/bin/env bash
# The CUDA checks, as the CTest test `cuda`: where kvfold's LibTorch can use a CUDA device, the
# hidden [cuda] Catch2 tests and a CLI eval on the device must pass; elsewhere the test exits 77,
# which CTest reports as skipped, after printing why.
# Usage: scripts/cuda_tests.sh BUILD_DIR SHARED_DIR
set -uo pipefail
build="$1"; shared="$2"
model="$shared/models/stories260K"
text="$shared/text/tinystories/calib.txt"
probe=$("$build/bin/kvfold" eval "$model" --text "$text" --max-windows 1 --quiet --json --device cuda 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
  if grep -q "CUDA" <<<"$probe"; then
    echo "SKIPPED: no usable CUDA device: ${probe#kvfold: error: }"
    exit 77
  fi
  echo "kvfold eval --device cuda failed without naming CUDA: $probe"
  exit 1
fi
set -e
"$build/bin/test_runtime_check" "[cuda]"
echo "cuda: eval on the device and the CPU/CUDA agreement tests (runtime, heal) passed"
