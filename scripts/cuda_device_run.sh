#!/usr/bin/env bash
# For a machine with an NVIDIA GPU and PyTorch installed: builds kvfold against PyTorch's CUDA
# LibTorch, runs the CUDA tests, then the layer sweep on the device at scale (eval and a
# convert of a random-weight TinyLlama-1.1B-shaped checkpoint with --device cuda), printing
# tokens/s and peak RSS for docs/results.md. Usage: scripts/cuda_device_run.sh [SHARED_DIR]
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
shared="$(cd "${1:-$src/../shared}" && pwd)"
build="$src/build-cuda"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DKVFOLD_SHARED_DIR="$shared" >/dev/null
cmake --build "$build" -j"$(nproc)"
bash "$src/scripts/cuda_tests.sh" "$build" "$shared"

"$build/bin/bench_make_random_checkpoint" tinyllama-1.1b "$work/m" >/dev/null
text="$shared/text/wikitext-2/test.raw.txt"
calib="$shared/text/wikitext-2/valid.tokens.txt"
for device in cuda cpu; do
  /usr/bin/time -f "$device eval: %e s, peak RSS %M KiB" "$build/bin/kvfold" eval "$work/m" --text "$text" \
    --max-windows 16 --device "$device" --json --quiet | python3 -c \
    "import json,sys; d=json.load(sys.stdin); print('$device eval: %d tokens, %.1f tokens/s' % (d['tokens_predicted'], d['tokens_per_second']))"
done
/usr/bin/time -f "cuda convert gqa-svd<kv-heads=1>,kv-scales, 8192 calibration tokens: %e s, peak RSS %M KiB" \
  "$build/bin/kvfold" convert "$work/m" --calib "$calib" --calib-tokens 8192 --device cuda \
  --passes 'gqa-svd<kv-heads=1>,kv-scales' -o "$work/out" --quiet --time-passes
"$build/bin/kvfold" eval "$work/out" --compare "$work/m" --text "$text" --max-windows 4 --device cuda --quiet
