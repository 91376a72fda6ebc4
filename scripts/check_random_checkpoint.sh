#!/usr/bin/env bash
# CTest `random_checkpoint`: the bench generator's output is a checkpoint kvfold reads, sharded
# and BF16 like published ones (the tiny shape with 40 layers in 1 MiB shards). Usage: BUILD_DIR SHARED_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"; shared="$(cd "$2" && pwd)"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
"$build/bin/bench_make_random_checkpoint" tiny "$work/m" --layers 40 --shard-mib 1 >/dev/null 2>&1
[ "$(ls "$work"/m/model-*-of-*.safetensors | wc -l)" -ge 2 ] || { echo "expected several shards"; exit 1; }
"$build/bin/kvfold" inspect "$work/m" --json | grep -q '"num_key_value_heads": 4' || { echo "inspect disagrees"; exit 1; }
"$build/bin/kvfold" eval "$work/m" --text "$shared/text/tinystories/eval.txt" --max-windows 1 --quiet >/dev/null
echo "random checkpoint: generated, inspected and evaluated"
