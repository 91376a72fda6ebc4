// kvfold, the command users run. It loads OpenBLAS alone, asks which kernels OpenBLAS picked on
// this CPU, sets OPENBLAS_CORETYPE where they are a fallback (runtime_check/blas_core.h), and
// executes the program itself, kvfold-core, in its place with the same arguments. kvfold-core
// used to re-execute itself for that, after its ~300 libraries (LibTorch's) had been loaded once
// already: 0.33 s more for every command on CPUs that Debian's OpenBLAS does not know
// (docs/results.md, "One start, not two").

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "formats/executable_dir.h"
#include "runtime_check/blas_core.h"

namespace {

// kvfold-core beside this file (the build tree) or in ../lib/kvfold (`cmake --install`, beside
// the sentencepiece shim it loads).
std::string CorePath() {
  const std::string dir = kvfold::ExecutableDir();
  for (const std::string& path : {dir + "/kvfold-core", dir + "/../lib/kvfold/kvfold-core"}) {
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return dir + "/kvfold-core";
}

// The BLAS that kvfold-core's libraries load, found the way they find it (libblas.so.3 first,
// as in kvfold-core's symbol scope); its threads end with the exec.
void LoadBlas() {
  for (const char* name : {"libblas.so.3", "libopenblas.so.0"})
    ::dlopen(name, RTLD_NOW | RTLD_GLOBAL);
}

}  // namespace

int main(int, char** argv) {
  LoadBlas();
  kvfold::ChooseFastBlasCore();
  const std::string core = CorePath();
  ::execv(core.c_str(), argv);
  std::fprintf(stderr,
               "kvfold: error: %s: cannot run (%s); kvfold runs from its build folder's bin/ or "
               "from `cmake --install`'s prefix, not copied alone\n",
               core.c_str(), std::strerror(errno));
  return 1;
}
