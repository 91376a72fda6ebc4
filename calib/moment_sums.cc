#include "calib/moment_sums.h"

#include <algorithm>

// The Fortran BLAS symmetric rank-k update and matrix product; LibTorch already loads a BLAS
// (OpenBLAS after scripts/setup.sh), and every BLAS exports these names.
extern "C" void ssyrk_(const char* uplo, const char* trans, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* beta,
                       float* c, const int* ldc);
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c, const int* ldc);

namespace kvfold {

void AddCrossMoment(const float* a, const float* b, std::int64_t rows, std::int64_t dim,
                    std::vector<float>& scratch, double* acc, std::int64_t acc_stride) {
  // Row-major [rows, dim] is column-major [dim, rows]. Column-major C = B A^T holds C(j, i) =
  // sum_r b[r, j] a[r, i] at i * dim + j: row-major a^T b, so that the sum below reads and writes
  // both in order (the transposed walk over a 2048-wide accumulator was a fifth of the CPU time
  // of a 1.1B-shape conversion on 16384 tokens: docs/results.md, "The refit's sums and solve").
  const int n = static_cast<int>(dim), k = static_cast<int>(rows);
  const float one = 1.0f, zero = 0.0f;
  scratch.resize(static_cast<std::size_t>(dim * dim));  // beta = 0: BLAS writes every element
  sgemm_("N", "T", &n, &n, &k, &one, b, &n, a, &n, &zero, scratch.data(), &n);
  for (std::int64_t i = 0; i < dim; ++i) {
    const float* row = scratch.data() + i * dim;
    double* out = acc + i * acc_stride;
    for (std::int64_t j = 0; j < dim; ++j) out[j] += row[j];
  }
}

void AddSymmetricMoment(const float* a, std::int64_t rows, std::int64_t dim,
                        std::vector<float>& scratch, double* acc) {
  // Row-major A [rows, dim] is column-major A^T [dim, rows]: syrk with trans 'N' gives A^T A,
  // whose column-major upper triangle ((j, i), j <= i, at i * dim + j) has the indices of the
  // row-major lower one, so each row is one contiguous run. With beta 0 syrk writes the whole
  // upper triangle, the only part read: no zeroing first.
  const int n = static_cast<int>(dim), k = static_cast<int>(rows);
  const float one = 1.0f, zero = 0.0f;
  scratch.resize(static_cast<std::size_t>(dim * dim));
  ssyrk_("U", "N", &n, &k, &one, a, &n, &zero, scratch.data(), &n);
  for (std::int64_t i = 0; i < dim; ++i) {
    const float* from = scratch.data() + i * dim;
    double* to = acc + i * dim;
    for (std::int64_t j = 0; j <= i; ++j) to[j] += from[j];
  }
}

void MirrorLowerTriangle(double* m, std::int64_t dim) {
  constexpr std::int64_t kTile = 64;
  for (std::int64_t ib = 0; ib < dim; ib += kTile) {
    for (std::int64_t jb = ib; jb < dim; jb += kTile) {
      for (std::int64_t i = ib; i < std::min(dim, ib + kTile); ++i) {
        for (std::int64_t j = std::max(jb, i + 1); j < std::min(dim, jb + kTile); ++j)
          m[i * dim + j] = m[j * dim + i];
      }
    }
  }
}

}  // namespace kvfold
