#!/usr/bin/env bash
# CTest `install`: `cmake --install BUILD --prefix P` gives a kvfold that runs without the source
# or build tree: P/bin/kvfold starts P/lib/kvfold/kvfold-core, which finds its sentencepiece shim
# beside itself and tokenizes a sentencepiece model exactly as the build tree's kvfold does.
# Usage: scripts/check_install.sh BUILD_DIR SHARED_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"; shared="$(cd "$2" && pwd)"
prefix="$(mktemp -d "${TMPDIR:-/tmp}/kvfold-install.XXXXXX")"
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
[ -x "$prefix/bin/kvfold" ] || { echo "no $prefix/bin/kvfold"; exit 1; }
[ -x "$prefix/lib/kvfold/kvfold-core" ] || { echo "no kvfold-core under $prefix/lib/kvfold"; exit 1; }
[ -f "$prefix/lib/kvfold/libkvfold_spm_shim.so" ] || { echo "no shim under $prefix/lib/kvfold"; exit 1; }
model="$shared/models/stories260K"  # sentencepiece: needs the shim
text="$shared/text/tinystories/calib.txt"
want="$("$build/bin/kvfold" tokenize "$model" --text "$text")"
got="$(cd / && env -u KVFOLD_SPM_SHIM "$prefix/bin/kvfold" tokenize "$model" --text "$text")"
[ "$got" = "$want" ] || { echo "the installed kvfold tokenizes differently"; exit 1; }
echo "install: $prefix/bin/kvfold runs with its shim from $prefix/lib/kvfold"
