# Sourced by hostile_inputs.sh: kvfold deletes and replaces only what it can show it wrote
# (formats/owned_folder.h). Each case leaves the user's files byte for byte as they were.
dead=4194305  # above Linux's pid_max ceiling (2^22): no process can have it

# A user's folder named like a dead run's staging folder is not swept, nor one with kvfold's
# marker beside a file kvfold never writes. (Run by hand: check_world counts OUT.tmp.* as stray.)
user_folder_case() {
  case_name="$1"; shift
  timeout 120 "$kv" "${convert[@]}" "${meanpool[@]}" -o llama --quiet "$@" >/dev/null 2>err.log ||
    fail "failed: $(head -c 300 err.log)"
  [ "$(cat "llama.tmp.$dead/notes.txt" 2>/dev/null)" = "my notes" ] && [ -f llama/kvfold.json ] &&
    passed=$((passed + 1)) || fail "the user's llama.tmp.$dead was deleted, or no output"
  rm -f err.log
}
mkdir "llama.tmp.$dead" && echo "my notes" >"llama.tmp.$dead/notes.txt"
user_folder_case "a user's OUT.tmp.<N> folder"
printf 'kvfold staging folder\npid %s\n' "$dead" >"llama.tmp.$dead/.kvfold-staging"
user_folder_case "a marked OUT.tmp.<N> holding a user's file" --force
rm -rf "llama.tmp.$dead" llama
case_name="user's OUT.tmp.<N> folders"
check_world && passed=$((passed + 1))

# --force needs kvfold's own kvfold.json, and nothing of the user's beside it.
mkdir mine && echo "my notes" >mine/notes.txt && : >mine/kvfold.json
expect_error "--force over an empty kvfold.json" 1 "its kvfold.json is not one kvfold wrote" \
  "${convert[@]}" "${meanpool[@]}" -o mine --force
rm mine/kvfold.json && mkdir mine/kvfold.json
expect_error "--force over a kvfold.json folder" 1 "its kvfold.json is not a regular file" \
  "${convert[@]}" "${meanpool[@]}" -o mine --force
expect_ok "an output to add notes to" "${convert[@]}" "${meanpool[@]}" -o ours
echo "my notes" >ours/notes.txt
expect_error "--force over kvfold's output holding the user's notes" 1 \
  "it holds notes.txt is not a file kvfold writes" "${convert[@]}" "${meanpool[@]}" -o ours --force
case_name="--force leaves the user's files"
[ "$(cat mine/notes.txt)" = "my notes" ] && [ "$(cat ours/notes.txt)" = "my notes" ] &&
  passed=$((passed + 1)) || fail "a user's notes were lost"
rm -rf mine ours

# A report never writes over its own JSON, nor over a JSON file of the user's.
echo '{"mine": 1}' >r.json
expect_error "report -o r.json" 1 "r.json: is where the report's JSON goes" \
  report model --calib "$calib" --calib-tokens 512 -o r.json
expect_error "report -o r.html beside the user's r.json" 1 "r.json: exists and is not a report kvfold wrote" \
  report model --calib "$calib" --calib-tokens 512 -o r.html
expect_error "convert --report beside the user's r.json" 1 "r.json: exists and is not a report kvfold wrote" \
  "${convert[@]}" "${meanpool[@]}" -o o1 --report r.html
case_name="the user's r.json"
[ "$(cat r.json)" = '{"mine": 1}' ] && passed=$((passed + 1)) || fail "r.json was changed"
rm -f r.json

# The planner's scratch folders: a killed plan's is swept by the next plan, a user's never.
mkdir ptmp
plan=(plan model --calib "$calib" --calib-tokens 512 --window 64 --score-windows 2
      --screen-windows 1 --budget 0.5)
case_name="kill -9 during kvfold plan"
TMPDIR="$work/ptmp" "$kv" "${plan[@]}" --quiet >/dev/null 2>&1 &
pid=$!
# Killed once a candidate folder carries its staging marker: one killed between the candidate's
# mkdir and its marker is not provably kvfold's, and is left (docs/plan.md).
for _ in $(seq 1200); do compgen -G "ptmp/kvfold-plan.*/s*/.kvfold-staging" >/dev/null && break; sleep 0.05; done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
mkdir ptmp/kvfold-plan.mine && echo "my notes" >ptmp/kvfold-plan.mine/notes.txt
left="$(ls ptmp | grep -v '^kvfold-plan.mine$' | wc -l)"
[ "$left" -ge 1 ] || fail "the killed plan left no scratch folder to sweep (it finished first?)"
TMPDIR="$work/ptmp" timeout 300 "$kv" "${plan[@]}" --quiet >/dev/null 2>plan.err ||
  fail "the next plan failed: $(head -c 300 plan.err)"
[ "$(ls ptmp | tr '\n' ' ')" = "kvfold-plan.mine " ] || fail "left in \$TMPDIR: $(ls ptmp | tr '\n' ' ')"
[ "$(cat ptmp/kvfold-plan.mine/notes.txt)" = "my notes" ] || fail "a user's kvfold-plan.mine was touched"
check_world && passed=$((passed + 1))
rm -rf ptmp plan.err
