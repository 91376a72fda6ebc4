#!/usr/bin/env bash
# CTest `format`: every C++ file in the repository follows .clang-format (clang-format 14, as
# Debian 12 ships it). Prints the files that do not, and how to fix them.
# Usage: scripts/check_format.sh
set -uo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "SKIPPED: format: clang-format not found"; exit 77; }
bad=()
while IFS= read -r -d '' file; do
  clang-format --dry-run --Werror "$file" >/dev/null 2>&1 || bad+=("$file")
done < <(git ls-files -z -- '*.cc' '*.h' 2>/dev/null || find . -path ./build -prune -o \( -name '*.cc' -o -name '*.h' \) -print0)
if ((${#bad[@]})); then
  echo "not formatted by .clang-format (${#bad[@]} files): ${bad[*]}"
  echo "fix: clang-format -i ${bad[*]}"
  exit 1
fi
echo "format: every C++ file follows .clang-format"
