# Sourced by hostile_inputs.sh: what kvfold records about a run (kvfold.json, the report) and
# what it reads back (--reproduce) is checked before any work, and text from a file reaches the
# terminal escaped.

# Names kvfold.json cannot record as UTF-8 JSON text are refused before the first layer.
cp -r model "$(printf 'model\xff')"
expect_error "a model folder whose name is not UTF-8" 1 "its name is not valid UTF-8" \
  convert "$(printf 'model\xff')" --calib "$calib" --calib-tokens 512 "${meanpool[@]}" -o o1
cp "$calib" "$(printf 'calib\xff.txt')"
expect_error "a calibration file whose name is not UTF-8" 1 "its name is not valid UTF-8" \
  convert model --calib "$(printf 'calib\xff.txt')" --calib-tokens 512 "${meanpool[@]}" -o o1
rm -rf "$(printf 'model\xff')" "$(printf 'calib\xff.txt')"

# --reproduce reads only kvfold's own format, and prints what it read escaped.
expect_ok "an output to reproduce" "${convert[@]}" "${meanpool[@]}" -o rep
edit_json() { python3 - "$@" <<'PY'
import json, sys
path, key, value = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
d = json.load(open(path)); node = d; *parents, last = key.split(".")
for p in parents: node = node[p]
node[last] = value; json.dump(d, open(path, "w"))
PY
}
cp rep/kvfold.json future.json && edit_json future.json format_version 2
expect_error "--reproduce of format_version 2" 1 "format_version 2 is not one this kvfold reads" \
  convert --reproduce future.json -o o1
cp rep/kvfold.json threads.json && edit_json threads.json calibration.threads -1
expect_error "--reproduce with calibration.threads -1" 1 "calibration.threads -1 is not 0 to 4096" \
  convert --reproduce threads.json -o o1
cp rep/kvfold.json ansi.json && edit_json ansi.json kvfold_version '"9\u001b[2J\nfake"'
case_name="--reproduce prints a recorded version escaped"
timeout 120 "$kv" convert --reproduce ansi.json -o o1 --quiet >/dev/null 2>ansi.err
if grep -q $'\x1b' ansi.err || [ "$(wc -l <ansi.err)" -ne 1 ] || ! grep -qF '9\x1b[2J\x0afake' ansi.err; then
  fail "the note was not one escaped line: $(cat -v ansi.err)"
elif check_world; then passed=$((passed + 1)); fi
rm -rf rep o1 future.json threads.json ansi.json ansi.err

# RoPE parameters that are positive but denormal would give inf frequencies, then NaN scores.
broken; set_config rope_scaling '{"rope_type": "llama3", "factor": 1e-320, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}'
expect_error "a denormal llama3 factor" 1 "rope_scaling.factor must be a positive number" inspect bad
expect_error "a denormal llama3 factor (eval)" 1 "rope_scaling.factor must be a positive number" \
  eval bad --text "$calib"
broken; set_config rope_theta 1e-320
expect_error "a denormal rope_theta" 1 "field 'rope_theta' must be a positive number" inspect bad
broken; set_config rope_theta 1e200 && set_config rope_scaling '{"rope_type": "linear", "factor": 1e300}'
expect_error "RoPE frequencies that underflow to 0" 1 "gives a RoPE frequency of" inspect bad
rm -rf bad

# One validator for every number on the command line: NaN, inf and out-of-range values exit 2
# naming the option.
expect_error "--plan-seconds NaN" 2 "--plan-seconds" plan model --calib "$calib" --budget 0.5 --plan-seconds NaN
expect_error "--plan-seconds inf" 2 "--plan-seconds" plan model --calib "$calib" --budget 0.5 --plan-seconds inf
expect_error "--kv-budget NaN" 2 "--kv-budget" "${convert[@]}" -o o1 --kv-budget NaN
expect_error "--kv-budget 0" 2 "--kv-budget" "${convert[@]}" -o o1 --kv-budget 0
expect_error "--rank-timeout -1" 2 "--rank-timeout" plan model --calib "$calib" --budget 0.5 --rank-timeout -1
expect_error "report --budget 1.5" 2 "--budget: '1.5' is not a fraction" \
  report model --calib "$calib" -o r.html --budget 1.5
