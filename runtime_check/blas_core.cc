#include "runtime_check/blas_core.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace kvfold {
namespace {

using NameFn = char* (*)();

// Resolved in the global scope, like runtime_check/blas_threads.cc: Debian's libtorch links
// libblas.so.3, which is OpenBLAS once scripts/setup.sh has run.
std::string CallName(const char* symbol) {
  const auto fn = reinterpret_cast<NameFn>(::dlsym(RTLD_DEFAULT, symbol));
  const char* s = fn ? fn() : nullptr;
  return s ? s : "";
}

bool IsGenericCore(const std::string& core) {
  for (const char* generic :
       {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Sandybridge", "Katmai",
        "Coppermine", "Northwood", "Banias", "Athlon", "Opteron", "Barcelona"}) {
    if (core == generic) return true;
  }
  return false;
}

}  // namespace

CpuFeatures DetectCpuFeatures() {
  CpuFeatures f;
#if defined(__x86_64__)
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
  return f;
}

std::string BetterCoreType(const std::string& core, const CpuFeatures& cpu) {
  if (core.empty()) return "";
  const bool generic = IsGenericCore(core);
  if (cpu.avx512 && (generic || core == "Haswell")) return "SKYLAKEX";
  if (cpu.avx2_fma && generic) return "HASWELL";
  return "";
}

bool ChooseFastBlasCore() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || std::getenv("KVFOLD_BLAS_REEXEC") != nullptr)
    return false;
  const std::string better = BetterCoreType(CallName("openblas_get_corename"), DetectCpuFeatures());
  if (better.empty()) return false;
  ::setenv("OPENBLAS_CORETYPE", better.c_str(), 1);
  ::setenv("KVFOLD_BLAS_REEXEC", "1", 1);  // never loop, even if OpenBLAS ignores the variable
  return true;
}

void EnsureFastBlasCore(char** argv) {
  if (!ChooseFastBlasCore()) return;
  ::execv("/proc/self/exe", argv);
  ::unsetenv("OPENBLAS_CORETYPE");  // exec failed: carry on with the kernels we have
}

std::string BlasDescription() {
  const std::string config = CallName("openblas_get_config");
  const std::string core = CallName("openblas_get_corename");
  if (config.empty()) return "not OpenBLAS (libblas.so.3 lacks openblas_get_config)";
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  return config + " (core " + core + (forced ? std::string(", OPENBLAS_CORETYPE=") + forced : "") +
         ")";
}

}  // namespace kvfold
