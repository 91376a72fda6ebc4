// ScopedSingleThreadBlas: pins OpenBLAS to one thread for a scope. kvfold parallelises CPU
// evaluation across windows itself; OpenBLAS's own pool would otherwise spin against LibTorch's
// OpenMP pool on the same cores. A no-op where the BLAS is not OpenBLAS.
#pragma once

namespace kvfold {

// OpenBLAS's own thread count, for the whole process (`--threads N`: without it OpenBLAS keeps
// one thread per core whatever LibTorch uses, and its idle threads spin in sched_yield). A
// no-op where the BLAS is not OpenBLAS.
void SetBlasThreads(int threads);

class ScopedSingleThreadBlas {
 public:
  ScopedSingleThreadBlas();
  ~ScopedSingleThreadBlas();
  ScopedSingleThreadBlas(const ScopedSingleThreadBlas&) = delete;
  ScopedSingleThreadBlas& operator=(const ScopedSingleThreadBlas&) = delete;

 private:
  int previous_ = 0;  // 0 = nothing to restore
};

}  // namespace kvfold
