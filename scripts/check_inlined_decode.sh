#!/usr/bin/env bash
# CTest `inlined_decode`: the weight decode of the built kvfold converts BF16 and F16 inline, not
# by a call per element. Position-independent code without -fno-semantic-interposition
# (CMakeLists.txt) made g++ call Bf16ToF32 and F16ToF32 from ConvertToF32's loops, which cost a
# 1-thread conversion of the TinyLlama-1.1B shape about 2 s (docs/results.md, "The BF16 decode,
# inlined"). A disassembly, so that the check does not depend on a timing.
# Usage: scripts/check_inlined_decode.sh BUILD_DIR
set -euo pipefail
binary="$1/bin/kvfold-core"  # the program; bin/kvfold is the launcher
command -v objdump >/dev/null || { echo "SKIPPED: inlined_decode: objdump not found"; exit 77; }
body="$(objdump -d --no-show-raw-insn -C "$binary" |
  awk '/<kvfold::ConvertToF32\(kvfold::DType, void const\*, unsigned long, float\*\)>:$/,/^$/')"
if [ -z "$body" ]; then
  echo "FAIL: $binary: no kvfold::ConvertToF32 found to disassemble"
  exit 1
fi
calls="$(grep -E 'call.*<kvfold::(Bf16ToF32|F16ToF32)' <<<"$body" || true)"
if [ -n "$calls" ]; then
  echo "FAIL: $binary: ConvertToF32 calls the per-element decode instead of inlining it:"
  echo "$calls"
  exit 1
fi
echo "ok: ConvertToF32 decodes BF16 and F16 inline ($(grep -c . <<<"$body") instructions)"
