#!/usr/bin/env bash
# CTest `format`: every C++ file in the repository follows .clang-format (clang-format 14, as
# Debian 12 ships it). Prints the files that do not, and how to fix them.
# Usage: scripts/check_format.sh
set -uo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "SKIPPED: format: clang-format not found"; exit 77; }
files=()
while IFS= read -r -d '' file; do files+=("$file"); done \
  < <(git ls-files -z -- '*.cc' '*.h' 2>/dev/null || find . -path ./build -prune -o \( -name '*.cc' -o -name '*.h' \) -print0)
# One clang-format for every file (one each took 45 s of CPU, mostly its start): each
# unformatted file is named in its "FILE:LINE:COLUMN: error: code should be clang-formatted".
report="$(clang-format --dry-run --Werror "${files[@]}" 2>&1 >/dev/null)"
rc=$?
bad=()
while IFS= read -r file; do bad+=("$file"); done < <(
  sed -n 's/^\(.*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' <<<"$report" | sort -u)
if [ "$rc" -ne 0 ] && ! ((${#bad[@]})); then  # clang-format itself failed
  echo "clang-format failed (exit $rc): $(head -c 600 <<<"$report")"
  exit 1
fi
if ((${#bad[@]})); then
  echo "not formatted by .clang-format (${#bad[@]} files): ${bad[*]}"
  echo "fix: clang-format -i ${bad[*]}"
  exit 1
fi
echo "format: every C++ file follows .clang-format"
