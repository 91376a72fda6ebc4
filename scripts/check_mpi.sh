#!/usr/bin/env bash
# CTest `mpi`: `mpirun -np 2` and `-np 4` give what one process gives (gqa-svd, kv-scales,
# kv-mixed, heal (every rank trains on every rank's windows; its trajectory and logits targets
# and heal after mlkv and lckv with 2), eval --compare;
# plan with 2), an error names its rank, rank 1 given other inputs (calibration file, --passes,
# --calib-tokens) is refused by name before any work, and a rank stopped (named after
# --rank-timeout) or killed midway leaves no output and a non-zero exit.
# Skipped (exit 77, reason printed) without mpirun or without MPI in the build.
# Usage: BUILD_DIR SHARED_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"; shared="$(cd "$2" && pwd)"
kvfold="$build/bin/kvfold"
command -v mpirun >/dev/null || { echo "SKIPPED: mpi: mpirun not found (scripts/setup.sh installs openmpi-bin)"; exit 77; }
"$kvfold" --version | grep -q "ranks: MPI" || { echo "SKIPPED: mpi: kvfold was built without MPI (scripts/setup.sh installs libopenmpi-dev)"; exit 77; }
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
model="$shared/models/stories260K-mha"
calib="$shared/text/tinystories/calib.txt"
eval_text="$shared/text/tinystories/eval.txt"
# --bind-to none: Open MPI pins each rank to one core when np <= 2, and OpenBLAS started on one
# core computes differently (by ~1e-7 of a tensor's scale, in one process as well: docs/mpi.md).
mpi=(mpirun --oversubscribe --bind-to none)
# 1e-6 of each tensor's scale: what the ranks may change is the grouping of float64 sums.
rel=1e-6
# At -np 4 the 16 calibration windows are cut into a batch for each rank (4 windows) where one
# process on 2 threads cuts a batch for each thread (8): the forward's GEMMs have other shapes and
# round float32 otherwise, by up to 3.1e-6 of a tensor's scale after a fold (measured). A window
# dropped or taken twice would move the statistics by about 1/16; kv-mixed's table counts them.
rel4=1e-5

# kv-mixed's table records the tokens its statistics saw: ranks that each took every batch (and
# doubled the sums, which leaves the gqa-svd and kv-scales outputs unchanged) would show there.
# 4096 calibration tokens: 16 windows of 256, 4 to a rank at -np 4.
for passes in 'gqa-svd<kv-heads=2>' 'kv-scales' 'kv-mixed' 'gqa-svd<kv-heads=2>,heal<steps=40,windows=16>' \
  'gqa-svd<kv-heads=2>,heal<steps=40,windows=16,target=trajectory>' \
  'gqa-svd<kv-heads=2>,heal<steps=40,windows=16,target=logits>' \
  'mlkv<kv-layers=2>,heal<steps=40,windows=16>' 'lckv<warmup=2>,heal<steps=40,windows=16>'; do
  # One thread, as each rank has here (2 cores): heal's training sums in another order on 2
  # threads (1.03e-6 of a tensor's scale), which is not what this test is about.
  "$kvfold" convert "$model" --calib "$calib" --calib-tokens 4096 --passes "$passes" -o "$work/n1" \
    --threads 1 --quiet >/dev/null
  # Heal's trajectory target on 2 ranks only: both targets gather their windows from the ranks
  # by the same code (converter/layer_loop.cc, CaptureHealWindows), which the default target
  # runs on 4 ranks; 4 ranks of the trajectory target took 23 s of this entry on 2 cores. Heal
  # after mlkv and lckv joins its windows by that code too, and so does the logits target, whose
  # source final states every rank computes for every window.
  ranks="2 4"
  [[ "$passes" != *trajectory* && "$passes" != *logits* && "$passes" != mlkv* && "$passes" != lckv* ]] || ranks=2
  for n in $ranks; do
    "${mpi[@]}" -np $n "$kvfold" convert "$model" --calib "$calib" --calib-tokens 4096 --passes "$passes" \
      -o "$work/n$n" --quiet >/dev/null
    grep -q "\"ranks\": $n" "$work/n$n/kvfold.json" || { echo "$passes: kvfold.json does not record $n ranks"; exit 1; }
    echo -n "$passes, $n ranks vs 1: "
    python3 "$(dirname "$0")/compare_outputs.py" folders "$work/n1" "$work/n$n" "$([ $n = 4 ] && echo $rel4 || echo $rel)"
    if [ "$passes" = kv-mixed ]; then
      echo -n "kv-mixed table, $n ranks vs 1: "
      python3 "$(dirname "$0")/compare_outputs.py" eval "$work/n1/kv_mixed_precision.json" "$work/n$n/kv_mixed_precision.json" $rel
    fi
  done
  [ "$passes" != 'gqa-svd<kv-heads=2>' ] || mv "$work/n1" "$work/gqa"
  rm -rf "$work"/n[124]
done

for n in 1 2 4; do
  "${mpi[@]}" -np $n "$kvfold" eval "$work/gqa" --compare "$model" --text "$eval_text" --max-windows 24 --json --quiet \
    >"$work/eval$n.json"
  [ $n = 1 ] || { echo -n "eval --compare, $n ranks vs 1: "; python3 "$(dirname "$0")/compare_outputs.py" eval "$work/eval1.json" "$work/eval$n.json" $rel; }
done

# The planner: every rank converts each candidate into its own scratch folder and scores its
# share of the windows; the plans and every candidate's numbers as one process makes them.
plan=(plan "$shared/models/stories260K" --calib "$calib" --budget 0.25 --calib-tokens 4096 --score-windows 8 --json --quiet)
"$kvfold" "${plan[@]}" >"$work/plan1.json"
"${mpi[@]}" -np 2 "$kvfold" "${plan[@]}" >"$work/plan2.json"
echo -n "plan, 2 ranks vs 1: "; python3 "$(dirname "$0")/compare_outputs.py" eval "$work/plan1.json" "$work/plan2.json" $rel

# An error on the ranks: one line naming the rank, a non-zero exit.
if "${mpi[@]}" -np 2 "$kvfold" convert "$work/missing" --calib "$calib" --passes kv-scales -o "$work/bad" 2>"$work/err"; then
  echo "a missing model did not fail under mpirun"; exit 1
fi
grep -q "^kvfold: error: rank [01] of 2: .*missing" "$work/err" || { echo "no error line naming the rank:"; cat "$work/err"; exit 1; }
[ ! -e "$work/bad" ] || { echo "output left after an error"; exit 1; }

# Rank 1 given other inputs (mpirun's MPMD form, `-np 1 A : -np 1 B`): every rank ends before
# any work, with one line naming rank 1 and what differs, and leaves no output nor staging folder.
differs() {  # 'WHAT THE ERROR SAYS' RANK_1_CALIB RANK_1_CALIB_TOKENS RANK_1_PASSES
  local expected="$1" common=(convert "$model" -o "$work/mixed" --quiet)
  if "${mpi[@]}" -np 1 "$kvfold" "${common[@]}" --calib "$calib" --calib-tokens 4096 --passes kv-scales \
    : -np 1 "$kvfold" "${common[@]}" --calib "$2" --calib-tokens "$3" --passes "$4" >/dev/null 2>"$work/err"; then
    echo "rank 1 with other inputs ($expected) did not fail"; exit 1
  fi
  grep -qxF "kvfold: error: rank 1 of 2: $expected" "$work/err" || { echo "no line '$expected':"; cat "$work/err"; exit 1; }
  [ "$(grep -c '^kvfold: error:' "$work/err")" = 1 ] || { echo "more than one error line:"; cat "$work/err"; exit 1; }
  [ ! -e "$work/mixed" ] || { echo "output left by mixed inputs ($expected)"; exit 1; }
  if ls -d "$work"/mixed.tmp.* >/dev/null 2>&1; then echo "staging folder left by mixed inputs ($expected)"; exit 1; fi
  echo "rank 1 with other inputs: ${expected%% (*}"
}
{ cat "$calib"; echo "One more line."; } >"$work/calib2.txt"
differs "$work/calib2.txt: its SHA-256 differs from rank 0's calibration file $calib" "$work/calib2.txt" 4096 kv-scales
differs "--passes differs from rank 0's (kv-scales<format=vllm-fp8,strategy=head> here, kv-scales<format=vllm-fp8,strategy=tensor> on rank 0)" \
  "$calib" 4096 'kv-scales<strategy=head>'
differs "--calib-tokens differs from rank 0's (2048 here, 4096 on rank 0)" "$calib" 2048 kv-scales

# Rank 1 of a conversion after its first layer (the pid of mpirun's child with that rank).
big="$shared/models/micro-mha"
# Alone it reports a layer within 3 s; under CI's parallel tests once not within 60 s (2026-12-07,
# not reproduced since), so it waits up to 180 s and says what mpirun's children were doing.
rank1_after_first_layer() {  # LAUNCHER_PID
  for _ in $(seq 1800); do
    grep -q '\[convert\] [1-9]' "$work/log" 2>/dev/null && break
    sleep 0.1
  done
  if ! grep -q '\[convert\] [1-9]' "$work/log"; then
    echo "the conversion never reported a layer in 180 s; its log:" >&2
    cat "$work/log" >&2
    ps -o pid,stat,etime,time,args --ppid "$1" >&2 || true
    return 1
  fi
  for pid in $(pgrep -P "$1"); do
    tr '\0' '\n' <"/proc/$pid/environ" | grep -qx OMPI_COMM_WORLD_RANK=1 && { echo "$pid"; return 0; }
  done
  echo "rank 1 not found among mpirun's children" >&2; return 1
}

# A rank stopped (SIGSTOP) midway: rank 0 waits --rank-timeout for it, then ends the run with an
# error naming it; no output, no staging folder.
"${mpi[@]}" -np 2 "$kvfold" convert "$big" --calib "$calib" --calib-tokens 65536 --passes 'gqa-svd<kv-heads=2>' \
  --rank-timeout 5 -o "$work/stopped" >"$work/out" 2>"$work/log" &
launcher=$!
victim="$(rank1_after_first_layer $launcher)" || exit 1
kill -STOP "$victim"
for _ in $(seq 600); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
still_running=0; kill -0 $launcher 2>/dev/null && still_running=1
kill -9 "$victim" 2>/dev/null || true
[ $still_running = 0 ] || { kill $launcher; echo "the run did not end 60 s after rank 1 was stopped"; exit 1; }
if wait $launcher; then echo "mpirun exited 0 after a rank was stopped"; exit 1; fi
grep -q "^kvfold: error: rank 0 of 2: rank 1 of 2 did not reach .* within 5 s (--rank-timeout)$" "$work/log" ||
  { echo "no error line naming the stopped rank:"; cat "$work/log"; exit 1; }
[ ! -e "$work/stopped" ] || { echo "output left after a rank was stopped"; exit 1; }
if ls -d "$work"/stopped.tmp.* >/dev/null 2>&1; then echo "staging folder left after a rank was stopped"; exit 1; fi
echo "stopped rank 1 after the first layer: named after --rank-timeout 5, no output, mpirun exit non-zero"

# A rank killed midway: every rank ends, mpirun exits non-zero, no output (nor staging folder).
"${mpi[@]}" -np 2 "$kvfold" convert "$big" --calib "$calib" --calib-tokens 65536 --passes 'gqa-svd<kv-heads=2>' \
  -o "$work/killed" >"$work/out" 2>"$work/log" &
launcher=$!
victim="$(rank1_after_first_layer $launcher)" || exit 1
kill -9 "$victim"
if wait $launcher; then echo "mpirun exited 0 after a rank was killed"; exit 1; fi
[ ! -e "$work/killed" ] || { echo "output left after a rank was killed"; exit 1; }
if ls -d "$work"/killed.tmp.* >/dev/null 2>&1; then echo "staging folder left after a rank was killed"; exit 1; fi
echo "killed rank 1 after the first layer: no output, mpirun exit non-zero"
