#!/usr/bin/env bash
# The README's main command: installs the dependencies, builds kvfold, and runs the default job
# on the default model and texts from ../shared: a gqa-svd conversion of mini-mha to 2 KV heads,
# calibrated on WikiText-2 validation, with its calibration report, then its evaluation against
# the original on WikiText-2 test. Output goes to out/ (override with OUT=...; MODEL, CALIB, TEXT, PASSES likewise).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${KVFOLD_SHARED:-../shared}"
model="${MODEL:-$shared/models/mini-mha}"
calib="${CALIB:-$shared/text/wikitext-2/valid.tokens.txt}"
text="${TEXT:-$shared/text/wikitext-2/test.raw.txt}"
passes="${PASSES:-gqa-svd<kv-heads=2,rope=commute>}"
out="${OUT:-out}"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target kvfold
mkdir -p "$out"
build/bin/kvfold convert "$model" --calib "$calib" --passes "$passes" -o "$out/model" --force --time-passes \
  --report "$out/report.html" --eval "$text"
build/bin/kvfold inspect "$out/model" | tee "$out/inspect.txt"
build/bin/kvfold eval "$out/model" --text "$text" --max-windows 64 --compare "$model" | tee "$out/eval.txt"
echo "wrote $out/model (converted checkpoint with kvfold.json), $out/report.html (+ report.json), $out/inspect.txt, $out/eval.txt"
