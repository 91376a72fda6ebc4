#!/usr/bin/env bash
# CTest `launcher`: bin/kvfold, the command users run (tools/kvfold_launcher.cc), chooses
# OpenBLAS's kernels without LibTorch and starts kvfold-core once, with the choice kvfold-core
# would make on its own (runtime_check/blas_core.h). Before, kvfold re-executed itself after its
# ~300 libraries had loaded: 0.33 s more for every command where OpenBLAS falls back.
# Usage: scripts/check_launcher.sh BUILD_DIR
set -euo pipefail
bin="$(cd "$1" && pwd)/bin"
fail() { echo "FAIL: launcher: $*"; exit 1; }
blas_line() { env "$@" --version | sed -n 's/^BLAS: //p'; }

# The launcher itself does not load LibTorch.
if ldd "$bin/kvfold" | grep -q 'libtorch'; then fail "$bin/kvfold links LibTorch"; fi
# The same kernels as kvfold-core choosing for itself (which re-executes where they change).
via_launcher="$(blas_line -u OPENBLAS_CORETYPE -u KVFOLD_BLAS_REEXEC "$bin/kvfold")"
by_itself="$(blas_line -u OPENBLAS_CORETYPE -u KVFOLD_BLAS_REEXEC "$bin/kvfold-core")"
[ "$via_launcher" = "$by_itself" ] || fail "kvfold chose '$via_launcher', kvfold-core '$by_itself'"
# LibTorch is loaded (and initialised) once per command: one start, whatever was chosen.
inits() { LD_DEBUG=libs env -u OPENBLAS_CORETYPE -u KVFOLD_BLAS_REEXEC "$1" --version 2>&1 >/dev/null |
  grep -c 'calling init:.*libtorch_cpu' || true; }
launcher_inits="$(inits "$bin/kvfold")"
[ "$launcher_inits" = 1 ] || fail "LibTorch initialised $launcher_inits times under bin/kvfold"
echo "launcher: LibTorch started once (kvfold-core alone: $(inits "$bin/kvfold-core") times); BLAS: $via_launcher"
# A core the user names is kept.
named="$(blas_line OPENBLAS_CORETYPE=PRESCOTT "$bin/kvfold")"
[[ "$named" == *"(core Prescott, OPENBLAS_CORETYPE=PRESCOTT)" ]] || fail "OPENBLAS_CORETYPE=PRESCOTT gave '$named'"
# Arguments and exit status pass through.
set +e
err="$("$bin/kvfold" inspect /nonexistent/model 2>&1 >/dev/null)"; status=$?
set -e
[ "$status" = 1 ] && [[ "$err" == "kvfold: error: /nonexistent/model"* ]] ||
  fail "inspect of a missing folder: status $status, '$err'"
# A launcher without kvfold-core says so in one line and fails.
alone="$(mktemp -d "${TMPDIR:-/tmp}/kvfold-launcher.XXXXXX")"
trap 'rm -rf "$alone"' EXIT
cp "$bin/kvfold" "$alone/kvfold"
set +e
err="$("$alone/kvfold" --version 2>&1 >/dev/null)"; status=$?
set -e
[ "$status" = 1 ] && [ "$(wc -l <<<"$err")" = 1 ] && [[ "$err" == "kvfold: error: $alone/kvfold-core: cannot run"* ]] ||
  fail "a launcher alone: status $status, '$err'"
echo "launcher: ok"
