#!/usr/bin/env bash
# One heal variant scored on both texts (issue 28): MODEL converted with
# `gqa-svd<kv-heads=KV>,HEAL` on its calibration text (bench/shared_models.sh; HEAL=none: the
# fold alone; FOLD= another fold instead of gqa-svd's default, e.g. FOLD='mlkv<kv-layers=3>' or
# FOLD='gqa-svd<kv-heads=2,rope=reconstruct>', KV then unused), then scored on 64
# windows (kvfold-ppl-v1, W = 256) of its own evaluation text and of the other family's
# (TinyStories eval <-> WikiText-2 test), KL against MODEL on each. Prints one markdown row:
# model, passes, own ppl, own KL, other ppl, other KL, convert wall s, convert peak RSS MiB.
# THIRD= a third text scored the same way, its ppl and KL added after the other text's (e.g.
# THIRD=../shared/text/tinyshakespeare/train.txt, a text no setting was chosen on).
#   bench/heal_two_texts.sh MODEL KV HEAL      e.g. stories260K 1 'heal<rank=16>'
# KVFOLD= the binary (default build/bin/kvfold).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=${KVFOLD:-build/bin/kvfold}
model=$1 kv=$2 heal=$3
src="$shared/models/$model"
model_texts "$model"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passes="${FOLD:-gqa-svd<kv-heads=$kv>}"
[ "$heal" != none ] && passes+=",$heal"
/usr/bin/time -f "%e %M" -o "$work/time" $kvfold convert "$src" --calib "$calib" \
  --passes "$passes" -o "$work/out" --quiet --threads 2 >/dev/null
read -r wall rss < "$work/time"
score() {
  $kvfold eval "$work/out" --text "$1" --max-windows 64 --threads 2 --quiet --json --compare "$src" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f | %.4f' % (d['ppl'], d['compare']['kl']))"
}
third=""
[ -n "${THIRD:-}" ] && third=" | $(score "$THIRD")"
echo "| $model | \`$passes\` | $(score "$eval") | $(score "$other")$third | $wall | $((rss / 1024)) |"
