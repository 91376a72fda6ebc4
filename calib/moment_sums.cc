#include "calib/moment_sums.h"

// The Fortran BLAS matrix product; LibTorch already loads a BLAS (OpenBLAS after
// scripts/setup.sh), and every BLAS exports this name.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c, const int* ldc);

namespace kvfold {

void AddCrossMoment(const float* a, const float* b, std::int64_t rows, std::int64_t dim,
                    std::vector<float>& scratch, double* acc, std::int64_t acc_stride) {
  // Row-major [rows, dim] is column-major [dim, rows]: C = A B^T over those is a^T b, column-major.
  const int n = static_cast<int>(dim), k = static_cast<int>(rows);
  const float one = 1.0f, zero = 0.0f;
  scratch.assign(static_cast<std::size_t>(dim * dim), 0.0f);
  sgemm_("N", "T", &n, &n, &k, &one, a, &n, b, &n, &zero, scratch.data(), &n);
  for (std::int64_t j = 0; j < dim; ++j) {
    for (std::int64_t i = 0; i < dim; ++i)
      acc[i * acc_stride + j] += scratch[static_cast<std::size_t>(j * dim + i)];
  }
}

}  // namespace kvfold
