#!/usr/bin/env bash
# Ranks (issue 17, docs/mpi.md): (1) wall time of `kvfold convert` (calibration in the converted
# sweep, gqa-svd with its refit) and of `kvfold eval --compare` with 1, 2 and 4 ranks on this
# machine (mpirun --bind-to none; ranks share the cores, each gets cores / ranks threads), with
# whether the output equals the one-rank output; (2) the statistics each rank sends per layer,
# as kvfold counts them (the "statistics joined" line), on random-weight checkpoints of the
# Llama-2-7B and Llama-2-70B shapes with 1 layer (the bytes depend on the shapes and passes only),
# times the full models' layer counts.
# Usage: bench/mpi.sh [MODEL] (default mini-mha). WORK=folder for the random checkpoints
# (default /tmp/kvfold-mpi; about 4 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shared_models.sh
kvfold=build/bin/kvfold
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
big="${WORK:-/tmp/kvfold-mpi}"
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun --oversubscribe --bind-to none)
$kvfold --version | sed 's/^/# /'
echo "# $(nproc) cores; $(mpirun --version | head -1)"

model="${1:-mini-mha}"
src="$shared/models/$model"
model_texts "$model"
kv0=$($kvfold inspect "$src" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['num_key_value_heads'])")
passes="gqa-svd<kv-heads=$((kv0 / 2))>"
seconds() { python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }

echo
echo "| $model | ranks | wall s | calibration s (rank 0) | same as 1 rank |"
echo "|---|---|---|---|---|"
for n in 1 2 4; do
  t0=$(date +%s.%N)
  "${mpi[@]}" -np $n $kvfold convert "$src" --calib "$calib" --passes "$passes" -o "$work/c$n" --quiet --time-passes \
    2>"$work/log" >/dev/null
  t1=$(date +%s.%N)
  calibration=$(awk '/^time  calibration/ {print $3}' "$work/log")
  same=$([ $n = 1 ] && echo - || python3 scripts/compare_outputs.py folders "$work/c1" "$work/c$n" 1e-6)
  echo "| convert $passes | $n | $(seconds "$t0" "$t1") | $calibration | $same |"
done
for n in 1 2 4; do
  t0=$(date +%s.%N)
  "${mpi[@]}" -np $n $kvfold eval "$work/c1" --compare "$src" --text "$eval" --max-windows 64 --json --quiet \
    >"$work/e$n.json"
  t1=$(date +%s.%N)
  same=$([ $n = 1 ] && echo - || python3 scripts/compare_outputs.py eval "$work/e1.json" "$work/e$n.json" 1e-6)
  echo "| eval --compare, 64 windows | $n | $(seconds "$t0" "$t1") | | $same |"
done

echo
echo "| shape | layers | passes | MiB per layer per rank | GiB per conversion per rank |"
echo "|---|---|---|---|---|"
mkdir -p "$big"
# MIB: the "MiB a layer" of a 2-rank conversion of $big/$1 with passes $2 (or "failed").
joined() {
  rm -rf "$work/big"
  # Two windows, both on rank 0: rank 1 joins with nothing; rank 0's bytes are the full shapes.
  "${mpi[@]}" -np 2 $kvfold convert "$big/$1" --calib "$calib" --calib-tokens 512 --passes "$2" -o "$work/big" \
    --threads 2 2>"$work/log" >/dev/null || { echo failed; return; }
  sed -n 's/.*statistics joined: .* from each rank, \([0-9.]*\) MiB a layer/\1/p' "$work/log"
}
row() { echo "| $1 | $2 | $3 | $4 | $(python3 -c "print('%.3f' % ($4 * $2 / 1024))") |"; }
[ -d "$big/llama-2-7b" ] || build/bin/bench_make_random_checkpoint llama-2-7b "$big/llama-2-7b" --layers 1 >/dev/null
[ -d "$big/llama-2-70b" ] || build/bin/bench_make_random_checkpoint llama-2-70b "$big/llama-2-70b" --layers 1 >/dev/null
# The refit's bytes do not depend on its ridge; ridge=1 solves once where ridge=auto tries ten.
for p in kv-scales "gqa-svd<kv-heads=16,refit=none>" "gqa-svd<kv-heads=16,ridge=1>"; do
  mib=$(joined llama-2-7b "$p")
  row llama-2-7b 32 "$p" "$mib"
  case "$p" in *none*) none7=$mib ;; *ridge*) refit7=$mib ;; esac
done
for p in kv-scales "gqa-svd<kv-heads=4,refit=none>"; do
  mib=$(joined llama-2-70b "$p")
  row llama-2-70b 80 "$p" "$mib"
  case "$p" in *none*) none70=$mib ;; esac
done
# The refit's moments are 6 (H d)^2 float64 (c_c c_c^T, c_c c_s^T, c_s c_s^T for the fit and the
# held-out windows): measured above on 7B (H d = 4096), scaled to H d = 8192. Measuring it at 70B
# takes two ranks of ~12 GB each (layer, moments, the solve): more than this machine has.
refit70=$(python3 -c "print('%.3f' % ($none70 + ($refit7 - $none7) * 4))")
row llama-2-70b 80 "gqa-svd<kv-heads=4> (refit moments scaled from 7B)" "$refit70"
