#!/usr/bin/env bash
# Prints the kvfold-ppl-v1 perplexity of every shared model/text pair that ../shared/README.md
# gives a reference figure for, as a markdown table (W = 256, first 64 windows).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${KVFOLD_SHARED:-../shared}"
echo "| model | text | tokens predicted | mean NLL | ppl | tokens/s |"
echo "|---|---|---|---|---|---|"
for pair in stories260K:tinystories/eval.txt stories260K:tinystories/calib.txt \
            stories260K:wikitext-2/test.raw.txt stories260K-mha:tinystories/eval.txt \
            micro-mha:wikitext-2/test.raw.txt micro-mha:wikitext-2/valid.tokens.txt \
            mini-mha:wikitext-2/test.raw.txt mini-mha:wikitext-2/valid.tokens.txt \
            mini-mha-bf16-sharded:wikitext-2/test.raw.txt; do
  model="${pair%%:*}"; text="${pair#*:}"
  build/bin/kvfold eval "$shared/models/$model" --text "$shared/text/$text" --max-windows 64 \
    --threads 2 --quiet --json |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('| $model | $text | %d | %.6f | %.4f | %.0f |' % (d['tokens_predicted'], d['mean_nll'], d['ppl'], d['tokens_per_second']))"
done
