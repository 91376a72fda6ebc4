#!/usr/bin/env bash
# Renders a freshly generated calibration report in headless Chromium, as a person would see it:
# it must load with no console or network errors, every chart that report.json implies must be
# in the rendered DOM, and a screenshot is saved. Usage: scripts/check_report.sh BUILD_DIR
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "$1" && pwd)"
shared="${KVFOLD_SHARED:-$src/../shared}"
work="$build/report-check"
rm -rf "$work" && mkdir -p "$work"
"$build/bin/kvfold" convert "$shared/models/stories260K" --calib "$shared/text/tinystories/calib.txt" \
  --calib-tokens 8192 --passes 'gqa-svd<kv-heads=2>' -o "$work/model" --quiet \
  --report "$work/report.html" --eval "$shared/text/tinystories/eval.txt" --eval-windows 8 >/dev/null

chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --user-data-dir="$work/profile" --enable-logging=stderr --v=0 --hide-scrollbars)
"${chrome[@]}" --dump-dom "file://$work/report.html" >"$work/dom.html" 2>"$work/chrome.log"
"${chrome[@]}" --window-size=1240,2400 --screenshot="$work/report.png" "file://$work/report.html" \
  >/dev/null 2>>"$work/chrome.log"

fail() { echo "check_report: $*"; exit 1; }
[ -s "$work/report.png" ] || fail "no screenshot"
if grep -E "CONSOLE|net::ERR_|Uncaught" "$work/chrome.log"; then fail "the page logged errors (above)"; fi
expected=$(python3 -c "import json; r=json.load(open('$work/report.json')); print(len(r['spectra']['layers']) + sum(1 for p in r['passes'] if 'layers' in p))")
rendered=$(grep -o '<svg class="chart"' "$work/dom.html" | wc -l)
[ "$rendered" -eq "$expected" ] || fail "$rendered charts rendered, report.json implies $expected"
for section in summary "KV spectra" "Validation"; do
  grep -q "$section" "$work/dom.html" || fail "section '$section' missing"
done
echo "check_report: $rendered charts rendered, no errors; screenshot $work/report.png"
