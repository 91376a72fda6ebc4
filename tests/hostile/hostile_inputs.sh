#!/usr/bin/env bash
# Hostile and careless input, end to end through the kvfold executable (CTest: `hostile`).
# Every case must give its documented exit code and one-line error, leave nothing behind (no
# temporary folders, no partial output) and never touch the input or an unrelated path: canary
# files and the input model's checksum are verified after every case.
# Usage: tests/hostile/hostile_inputs.sh BUILD_DIR SHARED_DIR
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kv="$(cd "$1" && pwd)/bin/kvfold"
shared="$(cd "$2" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/kvfold-hostile.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"

calib="$shared/text/tinystories/calib.txt"
mkdir victim && echo canary >victim/file && echo canary >canary
cp -r "$shared/models/stories260K" model
checksum() { (cd model && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }
model_sum="$(checksum)"
passed=0
failed=0

fail() { echo "FAILED: $case_name: $*"; failed=$((failed + 1)); }

# Nothing stray: canaries intact, input unchanged, no temporaries, no injected command ran.
check_world() {
  [ "$(cat canary)" = canary ] && [ "$(cat victim/file)" = canary ] || { fail "a canary was touched"; return 1; }
  [ "$(checksum)" = "$model_sum" ] || { fail "the input model changed"; return 1; }
  [ ! -e pwned ] || { fail "an injected command ran"; return 1; }
  local stray
  stray="$(find . -maxdepth 2 \( -name '*.tmp.*' -o -name '*.old.*' \) | head -3)"
  [ -z "$stray" ] || { fail "left behind: $stray"; return 1; }
  return 0
}

# expect_error NAME EXIT_CODE SUBSTRING ARGS...: kvfold fails with that code and one error line.
expect_error() {
  case_name="$1"; local want="$2" text="$3"; shift 3
  timeout 60 "$kv" "$@" >out.log 2>err.log </dev/null
  local rc=$?
  local lines; lines="$(wc -l <err.log)"
  if [ "$rc" -ne "$want" ]; then fail "exit $rc, expected $want; stderr: $(head -c 300 err.log)"
  elif [ "$lines" -ne 1 ] || ! head -1 err.log | grep -q '^kvfold: error: '; then fail "not one error line: $(head -c 300 err.log)"
  elif ! grep -qF -- "$text" err.log; then fail "stderr lacks '$text': $(cat err.log)"
  elif [ -s out.log ]; then fail "stdout not empty"
  elif check_world; then passed=$((passed + 1)); fi
  rm -f out.log err.log
}

# expect_ok NAME ARGS...: kvfold succeeds.
expect_ok() {
  case_name="$1"; shift
  if ! timeout 120 "$kv" "$@" --quiet >out.log 2>err.log </dev/null; then fail "failed: $(head -c 300 err.log)"
  elif check_world; then passed=$((passed + 1)); fi
  rm -f out.log err.log
}

convert=(convert model --calib "$calib" --calib-tokens 512)
meanpool=(--passes 'gqa-meanpool<kv-heads=2>')

# 1. No shell anywhere: quotes and $(...) in -o are just characters, with and without --force.
expect_ok "quote injection, new output" "${convert[@]}" "${meanpool[@]}" -o "x'\$(touch pwned)'"
expect_ok "quote injection, --force" "${convert[@]}" "${meanpool[@]}" -o "x'\$(touch pwned)'" --force
[ -f "x'\$(touch pwned)'/kvfold.json" ] || fail "quoted output missing"
expect_ok "quote splitting, --force" "${convert[@]}" "${meanpool[@]}" -o "a' victim '"
expect_ok "quote splitting, --force again" "${convert[@]}" "${meanpool[@]}" -o "a' victim '" --force
expect_ok "a plain quote" "${convert[@]}" "${meanpool[@]}" -o "it's"
rm -rf "x'\$(touch pwned)'" "a' victim '" "it's"

# 2. The output never is, contains or lies inside the input (symbolic links resolved).
ln -s model model-link
expect_error "-o is the input" 1 "is the input model folder" "${convert[@]}" "${meanpool[@]}" -o model --force
expect_error "-o is the input via a link" 1 "is the input model folder" "${convert[@]}" "${meanpool[@]}" -o model-link --force
expect_error "-o inside the input" 1 "lies inside the input model folder" "${convert[@]}" "${meanpool[@]}" -o model/out
expect_error "-o contains the input" 1 "contains the input model folder" "${convert[@]}" "${meanpool[@]}" -o . --force
expect_error "--force over someone's folder" 1 "has no kvfold.json" "${convert[@]}" "${meanpool[@]}" -o victim --force
expect_error "--force over a file" 1 "is not a folder" "${convert[@]}" "${meanpool[@]}" -o canary --force
rm model-link

# 3. Only the converted model's own regular files travel.
cp -r model messy && mkdir messy/original && echo stale >messy/pytorch_model-00001-of-00002.bin
ln -s /etc/shadow messy/vocab.json && ln -s /dev/zero messy/added_tokens.json && mkfifo messy/chat_template.jinja
echo license >messy/LICENSE
expect_ok "a messy model folder" convert messy --calib "$calib" --calib-tokens 512 "${meanpool[@]}" -o messy-out
[ "$(ls messy-out | tr '\n' ' ')" = "LICENSE config.json generation_config.json kvfold.json model.safetensors special_tokens_map.json tokenizer.model tokenizer_config.json " ] ||
  { case_name="a messy model folder"; fail "copied: $(ls messy-out | tr '\n' ' ')"; }
[ -z "$(find messy-out -type l)" ] || { case_name="a messy model folder"; fail "a link was copied"; }
rm -rf messy messy-out
# The tokenizer is read only from a file of the folder's own (tokenizer.json is preferred).
cp -r model messy && ln -s /etc/shadow messy/tokenizer.json
expect_error "tokenizer.json leading out of the folder" 1 "messy/tokenizer.json: a symbolic link leading out of the model folder" \
  eval messy --text "$calib"
rm messy/tokenizer.json && mkfifo messy/tokenizer.json
expect_error "tokenizer.json is a FIFO" 1 "messy/tokenizer.json: not a regular file" eval messy --text "$calib"
rm -rf messy

# Broken models: a copy of the input with one thing changed.
broken() { rm -rf bad && cp -r model bad; }
set_config() { python3 - "$1" "$2" <<'EOF'
import json, sys
c = json.load(open("bad/config.json")); c[sys.argv[1]] = json.loads(sys.argv[2])
json.dump(c, open("bad/config.json", "w"))
EOF
}

# 4, 5, 7. Sizes that overflow or exceed the weights; JSON of the wrong type anywhere.
broken; set_config head_dim 4611686018427387912
expect_error "head_dim wraps int64 (inspect)" 1 "is too large" inspect bad
expect_error "head_dim wraps int64 (convert)" 1 "is too large" convert bad --calib "$calib" "${meanpool[@]}" -o o1
expect_error "head_dim wraps int64 (mlkv)" 1 "is too large" convert bad --calib "$calib" --passes 'mlkv<kv-layers=1>' -o o1
expect_error "head_dim wraps int64 (eval)" 1 "is too large" eval bad --text "$calib"
broken; set_config num_hidden_layers 1000000
expect_error "a million layers" 1 "but the weights hold only" inspect bad
broken; set_config num_hidden_layers 1000000000
expect_error "a billion layers" 1 "num_hidden_layers is too large" inspect bad
broken; set_config head_dim 22213890000
expect_error "head_dim near 2^34 (an 88 GB RoPE table)" 1 "head_dim is too large" inspect bad
broken; set_config rope_scaling '{"rope_type": 5}'
expect_error "rope_type of the wrong type" 1 "rope_scaling.rope_type must be a string" inspect bad
broken; set_config eos_token_id '[1.5]'
expect_error "eos list of floats" 1 "eos_token_id" inspect bad

# 5. Inputs that are not regular files never get read.
mkfifo fifo.txt
expect_error "--text /dev/zero" 1 "/dev/zero: is a device" eval model --text /dev/zero
expect_error "--calib /dev/zero" 1 "/dev/zero: is a device" convert model --calib /dev/zero "${meanpool[@]}" -o o1
expect_error "a FIFO as text" 1 "is a FIFO" eval model --text fifo.txt
expect_error "a folder as text" 1 "is a folder" eval model --text victim
broken; rm bad/config.json && mkdir bad/config.json
expect_error "a folder as config.json" 1 "config.json: is a folder" inspect bad
broken; rm bad/tokenizer.model && mkdir bad/tokenizer.model
expect_error "a folder as tokenizer.model" 1 "tokenizer.model: is a folder" eval bad --text "$calib"

# 6. Numbers the command line refuses (exit 2).
expect_error "--window 0" 2 "--window" "${convert[@]}" "${meanpool[@]}" -o o1 --window 0
expect_error "--threads 100000" 2 "--threads" eval model --text "$calib" --threads 100000
expect_error "--threads -1" 2 "--threads" eval model --text "$calib" --threads -1
expect_error "--threads overflow" 2 "--threads" eval model --text "$calib" --threads 99999999999999999999
expect_error "--max-windows -1" 2 "--max-windows" eval model --text "$calib" --max-windows -1
expect_error "--eval-windows -5" 2 "--eval-windows" "${convert[@]}" "${meanpool[@]}" -o o1 --eval-windows -5
expect_error "eval --window 0" 2 "--window" eval model --text "$calib" --window 0
expect_error "plan without --budget" 2 "--budget" plan model --calib "$calib"
expect_error "plan --budget 1.5" 2 "--budget: '1.5' is not a fraction" plan model --calib "$calib" --budget 0.5,1.5
expect_error "plan on a missing model" 1 "nowhere" plan nowhere --calib "$calib" --budget 0.5
expect_error "--kv-budget with --passes" 1 "--kv-budget: not used with --passes" "${convert[@]}" "${meanpool[@]}" -o o1 --kv-budget 0.5

# 11. NaN weights are named; control characters in names cannot cut the message.
broken; python3 - <<'EOF'
import json, struct
p = "bad/model.safetensors"; b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
t = h["model.layers.1.self_attn.k_proj.weight"]; o = 8 + n + t["data_offsets"][0]
b[o + 12:o + 16] = struct.pack("<f", float("nan")); open(p, "wb").write(b)
EOF
expect_error "a NaN weight" 1 "tensor 'model.layers.1.self_attn.k_proj.weight' holds nan at element 3" \
  convert bad --calib "$calib" --calib-tokens 512 --passes 'gqa-svd<kv-heads=2>' -o o1
broken; python3 - <<'EOF'
import json
json.dump({"weight_map": {"model.norm.weight": "shard\u0000.safetensors"}}, open("bad/model.safetensors.index.json", "w"))
EOF
rm bad/model.safetensors
expect_error "a NUL in a shard name" 1 'shard\x00.safetensors' inspect bad

# 12. Refused before any work: the calibration text is invalid UTF-8, so an error about it
# would mean the run got past the check under test.
printf 'ok \xff\xfe bad' >bad-utf8.txt
late=(convert model --calib bad-utf8.txt)
expect_error "-o under /proc" 1 "cannot create the output folder" "${late[@]}" "${meanpool[@]}" -o /proc/kvfold-out
expect_error "--report under /proc" 1 "cannot write the report there" "${late[@]}" "${meanpool[@]}" -o o1 --report /proc/x/r.html
expect_error "--report inside the input" 1 "inside the input model folder" "${late[@]}" "${meanpool[@]}" -o o1 --report model/r.html
expect_error "protect=99" 1 "protect layer 99 does not exist" "${late[@]}" --passes 'kv-mixed<protect=99>' -o o1
expect_ok "--report into the output folder" "${convert[@]}" "${meanpool[@]}" -o with-report --report with-report/report.html
[ -f with-report/report.html ] && [ -f with-report/report.json ] || { case_name="--report into the output"; fail "no report in the output"; }

# 13. Strict pipeline text.
expect_error "protect=-1" 1 "protect layer -1 does not exist" "${late[@]}" --passes 'kv-mixed<protect=-1>' -o o1
expect_error "protect=0,0" 1 "lists 0 twice" "${late[@]}" --passes 'kv-mixed<protect=0,0>' -o o1
expect_error "a trailing comma" 1 "empty parameter" "${late[@]}" --passes 'gqa-svd<kv-heads=2,>' -o o1
expect_error "a lone comma" 1 "empty parameter" "${late[@]}" --passes 'gqa-svd<,>' -o o1

# 16. --reproduce: the same bytes.
expect_ok "--reproduce" convert --reproduce with-report/kvfold.json -o reproduced
for f in config.json kvfold.json model.safetensors tokenizer.model; do
  cmp -s "with-report/$f" "reproduced/$f" || { case_name="--reproduce"; fail "$f differs"; }
done
rm -rf with-report reproduced

# 9. SIGINT/SIGTERM remove the staging folder and exit 130/143; SIGKILL leaves it to the next run.
slow=(convert "$shared/models/mini-mha" --calib "$shared/text/wikitext-2/valid.tokens.txt" --calib-tokens 65536
      --passes 'gqa-svd<kv-heads=4>' --quiet)
for sig in INT TERM KILL; do
  case_name="SIG$sig during a conversion"
  "$kv" "${slow[@]}" -o sig-out 2>sig.log &
  pid=$!
  for _ in $(seq 200); do [ -d "sig-out.tmp.$pid" ] && break; sleep 0.05; done
  [ -d "sig-out.tmp.$pid" ] || fail "no staging folder appeared"
  sleep 0.5
  kill -s "$sig" "$pid"
  wait "$pid" 2>/dev/null; rc=$?
  want=$([ $sig = INT ] && echo 130 || ([ $sig = TERM ] && echo 143 || echo 137))
  [ "$rc" -eq "$want" ] || fail "exit $rc, expected $want"
  [ ! -e sig-out ] || fail "an output appeared"
  if [ $sig = KILL ]; then
    [ -d "sig-out.tmp.$pid" ] || fail "SIGKILL cannot clean up, yet the staging folder is gone"
    expect_ok "the next run removes a dead run's staging folder" "${convert[@]}" "${meanpool[@]}" -o sig-out
  elif check_world; then
    grep -q "partial output removed" sig.log && passed=$((passed + 1)) || fail "no message: $(cat sig.log)"
  fi
  rm -rf sig-out sig.log
done

# 10. A kill at any moment of a --force replacement leaves a complete output at OUT.
expect_ok "--force base output" "${convert[@]}" "${meanpool[@]}" -o swap-out
case_name="kills during --force"
for delay in 0.05 0.1 0.2 0.3 0.4 0.6; do
  "$kv" "${convert[@]}" "${meanpool[@]}" -o swap-out --force --quiet >/dev/null 2>&1 &
  pid=$!; sleep "$delay"; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  "$kv" inspect swap-out >/dev/null 2>&1 && [ -f swap-out/kvfold.json ] || fail "OUT incomplete after a kill at ${delay}s"
done
rm -rf swap-out.tmp.* && passed=$((passed + 1))
rm -rf swap-out o1 bad

# More cases, one file per surface (tests/hostile/cases_*.sh), run with the helpers above.
for cases in "$here"/cases_*.sh; do
  [ -e "$cases" ] || continue
  # shellcheck source=/dev/null
  source "$cases"
done

echo "hostile inputs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
