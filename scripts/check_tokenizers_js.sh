#!/usr/bin/env bash
# kvfold's tokenizer.json reader against HF's JavaScript tokenizers, token for token, on real
# Llama 3.1, Qwen3 and Llama 2 / Mistral tokenizer.json files (tests/js). scripts/setup.sh installs
# them; where Node.js or the packages are missing the test is skipped (exit 77) and says why.
set -euo pipefail
build=$1 shared=$2
js_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/js"
if ! command -v node >/dev/null; then
  echo "SKIPPED: tokenizer_js: node not found (install Node.js, then run scripts/setup.sh)"
  exit 77
fi
if [ ! -d "$js_dir/node_modules/@huggingface/tokenizers" ]; then
  echo "SKIPPED: tokenizer_js: tests/js/node_modules missing (scripts/setup.sh installs it)"
  exit 77
fi
node "$js_dir/compare_tokenizers.mjs" "$build/bin/kvfold" "$shared"
