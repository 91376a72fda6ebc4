// ScopedSingleThreadBlas: pins OpenBLAS to one thread for a scope. kvfold parallelises CPU
// evaluation across windows itself; OpenBLAS's own pool would otherwise spin against LibTorch's
// OpenMP pool on the same cores. A no-op where the BLAS is not OpenBLAS.
#pragma once

namespace kvfold {

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
