#!/usr/bin/env bash
# CTest `streaming_memory`: kvfold holds one layer, not the model. The same narrow shape (GQA,
# so per-layer statistics are small) with 4 and with 64 layers (60 x 11 MiB = 645 MiB of float32
# weights more): eval --compare, and convert (gqa-svd then kv-scales, calibrated layer by layer,
# writing, an in-output report with validation) must peak (RSS as /usr/bin/time reports it, file
# pages included) less than a twelfth of that apart: 53 MiB, less than the extra layers' q and o
# in BF16 (60 MiB), which a draft that kept its written layers' bytes held until 2026-12-05 (89
# MiB of growth then, 22 after). Holding every layer as float32, as kvfold did before it
# streamed, grows by the whole difference (and the mmap'd BF16 pages by half of it again).
# Convert writes each layer as it finishes (formats/safetensors_shards.h) and frees its bytes.
# Usage: BUILD_DIR SHARED_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"; shared="$(cd "$2" && pwd)"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
kvfold="$build/bin/kvfold"
text="$shared/text/tinystories/eval.txt"
calib="$shared/text/tinystories/calib.txt"

peak_kib() {  # peak RSS of a command, in KiB
  /usr/bin/time -f "%M" -o "$work/rss" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  cat "$work/rss"
}

declare -A eval_rss convert_rss
for layers in 4 64; do
  "$build/bin/bench_make_random_checkpoint" narrow "$work/m$layers" --layers "$layers" --shard-mib 64 >/dev/null 2>&1
  convert_rss[$layers]=$(peak_kib "$kvfold" convert "$work/m$layers" --calib "$calib" --calib-tokens 1024 \
    --passes 'gqa-svd<kv-heads=1>,kv-scales' -o "$work/out$layers" --report "$work/out$layers/report.html" \
    --eval "$text" --eval-windows 4 --quiet)
  # The converted model against its source (no second conversion just for this).
  eval_rss[$layers]=$(peak_kib "$kvfold" eval "$work/out$layers" --compare "$work/m$layers" --text "$text" \
    --max-windows 4 --quiet)
done
# float32 bytes of 60 layers: q and o 512^2, k and v 128 x 512, MLP 3 x 512 x 1408, 2 norms.
extra_kib=$(( 60 * (2 * 512 * 512 + 2 * 128 * 512 + 3 * 512 * 1408 + 2 * 512) * 4 / 1024 ))
status=0
for what in eval convert; do
  declare -n rss="${what}_rss"
  growth=$(( ${rss[64]} - ${rss[4]} ))
  echo "$what: peak RSS $(( ${rss[4]} / 1024 )) MiB with 4 layers, $(( ${rss[64]} / 1024 )) MiB with 64;" \
       "growth $(( growth / 1024 )) MiB against $(( extra_kib / 1024 )) MiB of float32 weights added"
  if [ "$growth" -ge $(( extra_kib / 12 )) ]; then echo "FAIL: $what does not stream"; status=1; fi
done
# A long calibration text (the 1.3 MB WikiText-2 test 32 times, 42 MB) whose first 1024 tokens
# are used: sentencepiece needs ~100 bytes per byte of text it encodes in one call, 4 GiB here;
# encoded in pieces (calib/seam_encode.h) only the first piece is read.
for _ in $(seq 32); do cat "$shared/text/wikitext-2/test.raw.txt"; done >"$work/long.txt"
long_rss=$(peak_kib "$kvfold" convert "$shared/models/stories260K" --calib "$work/long.txt" \
  --calib-tokens 1024 --passes 'gqa-svd<kv-heads=2>' -o "$work/long_out" --quiet)
echo "convert with a 42 MB calibration text: peak RSS $(( long_rss / 1024 )) MiB"
if [ "$long_rss" -ge $(( 1024 * 1024 )) ]; then echo "FAIL: the whole calibration text was encoded at once"; status=1; fi
exit $status
