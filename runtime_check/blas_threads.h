// ScopedSingleThreadBlas: pins OpenBLAS to one thread for a scope. kvfold parallelises CPU
// evaluation across windows itself; OpenBLAS's own pool would otherwise spin against LibTorch's
// OpenMP pool on the same cores. A no-op where the BLAS is not OpenBLAS.
#pragma once

namespace kvfold {

// OpenBLAS's own thread count, for the whole process (`--threads N`: without it OpenBLAS keeps
// one thread per core whatever LibTorch uses, and its idle threads spin in sched_yield). A
// no-op where the BLAS is not OpenBLAS.
void SetBlasThreads(int threads);

// OpenBLAS's idle pool threads spin in sched_yield for 2^28 cycles (about 0.1 s) after every
// threaded call before they sleep; kvfold alternates threaded products with its own
// data-parallel rounds (one BLAS thread each), so the spare thread spun through most of them:
// a third of a conversion's system time (docs/results.md, "OpenBLAS's idle threads"). This
// restarts the pool with OPENBLAS_THREAD_TIMEOUT=4 (sleep after 16 cycles) unless the variable
// is set already. Call before any BLAS call is in flight (start of main); once per process. A
// no-op where the BLAS is not a pthreads OpenBLAS.
void SleepIdleBlasThreads();

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
