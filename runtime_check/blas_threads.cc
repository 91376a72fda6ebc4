#include "runtime_check/blas_threads.h"

#include <dlfcn.h>

namespace kvfold {
namespace {

using SetThreads = void (*)(int);
using GetThreads = int (*)();

// Resolved in the global scope: Debian's libtorch links libblas.so.3, which is OpenBLAS when
// scripts/setup.sh has run; other BLAS builds simply lack the symbols.
SetThreads SetFn() {
  static auto fn = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return fn;
}
GetThreads GetFn() {
  static auto fn = reinterpret_cast<GetThreads>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn;
}

}  // namespace

void SetBlasThreads(int threads) {
  if (SetFn() != nullptr && threads > 0) SetFn()(threads);
}

ScopedSingleThreadBlas::ScopedSingleThreadBlas() {
  if (SetFn() == nullptr || GetFn() == nullptr) return;
  previous_ = GetFn()();
  SetFn()(1);
}

ScopedSingleThreadBlas::~ScopedSingleThreadBlas() {
  if (previous_ > 0) SetFn()(previous_);
}

}  // namespace kvfold
