// The BLAS core: Debian's OpenBLAS 0.3.21 does not recognise recent CPUs (AVX-512, AMX) and
// falls back to its SSE3 "Prescott" kernels, ~6x slower at sgemm. OpenBLAS picks its kernels
// when it is loaded, from OPENBLAS_CORETYPE, so the fix is to set that variable and start the
// process again, before the first matrix product. The kvfold command does that before anything
// loads LibTorch (tools/kvfold_launcher.cc), so a run loads its ~300 libraries once, not twice.
// A no-op where the BLAS is not OpenBLAS, where the user set OPENBLAS_CORETYPE, or where the
// core already suits the CPU.
#pragma once

#include <string>

namespace kvfold {

struct CpuFeatures {
  bool avx2_fma = false;
  bool avx512 = false;  // F, BW, VL and DQ: what OpenBLAS's SKYLAKEX kernels use
};

CpuFeatures DetectCpuFeatures();

// The OPENBLAS_CORETYPE that suits a CPU with `cpu` better than the running `core`, or "" when
// the running core is already right (or unknown to this rule).
std::string BetterCoreType(const std::string& core, const CpuFeatures& cpu);

// Sets OPENBLAS_CORETYPE (and KVFOLD_BLAS_REEXEC, so that no one chooses again) in this
// process's environment when BetterCoreType says so, for a program about to be executed; false
// when nothing needs to change or the user named a core. OpenBLAS must be loaded: the kvfold
// command (tools/kvfold_launcher.cc) loads it, chooses, and executes kvfold-core.
bool ChooseFastBlasCore();

// Re-executes the process (/proc/self/exe, same argv) with OPENBLAS_CORETYPE set when
// BetterCoreType says so; returns when nothing needs to change or the re-exec fails.
void EnsureFastBlasCore(char** argv);

// "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64 (core Haswell)", or what is
// known about a BLAS that is not OpenBLAS.
std::string BlasDescription();

}  // namespace kvfold
