#!/usr/bin/env bash
# The README's main command: installs the dependencies, builds kvfold, and runs the default job
# on the default model and text from ../shared. Output goes to out/ (override with OUT=...).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${KVFOLD_SHARED:-../shared}"
model="${MODEL:-$shared/models/mini-mha}"
text="${TEXT:-$shared/text/wikitext-2/test.raw.txt}"
out="${OUT:-out}"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target kvfold
mkdir -p "$out"
build/bin/kvfold inspect "$model" | tee "$out/inspect.txt"
build/bin/kvfold eval "$model" --text "$text" --max-windows 64 --json > "$out/eval.json"
echo "wrote $out/inspect.txt and $out/eval.json"
