#include "runtime_check/blas_threads.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

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

void SleepIdleBlasThreads() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr) return;  // the user's own choice
    using Call = int (*)();
    // OpenBLAS reads the variable when it starts its pool: read it again, stop the pool, start it.
    const auto read_env = reinterpret_cast<void (*)()>(::dlsym(RTLD_DEFAULT, "openblas_read_env"));
    const auto stop = reinterpret_cast<Call>(::dlsym(RTLD_DEFAULT, "blas_thread_shutdown_"));
    const auto start = reinterpret_cast<Call>(::dlsym(RTLD_DEFAULT, "blas_thread_init"));
    if (read_env == nullptr || stop == nullptr || start == nullptr) return;
    ::setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
    read_env();
    stop();
    start();
  });
}

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
