// The one linear-algebra header: symmetric and Hermitian eigendecompositions (LAPACKE) and the
// small dense helpers the passes need. Results follow a fixed sign/phase convention so that
// conversions are deterministic and comparable across runs.
#pragma once

#include <complex>
#include <cstdint>
#include <optional>
#include <vector>

namespace kvfold {

// Dense row-major matrix, zero-initialised.
template <typename T>
struct DenseMatrix {
  std::int64_t rows = 0, cols = 0;
  std::vector<T> data;
  DenseMatrix() = default;
  DenseMatrix(std::int64_t r, std::int64_t c)
      : rows(r), cols(c), data(static_cast<std::size_t>(r * c), T(0)) {}
  T& operator()(std::int64_t r, std::int64_t c) {
    return data[static_cast<std::size_t>(r * cols + c)];
  }
  T operator()(std::int64_t r, std::int64_t c) const {
    return data[static_cast<std::size_t>(r * cols + c)];
  }
};

using Complex = std::complex<double>;
using Matrix = DenseMatrix<double>;
using ComplexMatrix = DenseMatrix<Complex>;

// Eigenpairs in descending eigenvalue order; vectors(i, k) is component i of eigenvector k.
// Each eigenvector's largest-magnitude component is made real and positive.
template <typename T>
struct EigenPairs {
  std::vector<double> values;
  DenseMatrix<T> vectors;
};
using SymmetricEigen = EigenPairs<double>;
using HermitianEigen = EigenPairs<Complex>;

// Throws Error when LAPACK fails to converge or the input is not square.
SymmetricEigen EigenSymmetric(const Matrix& symmetric);
HermitianEigen EigenHermitian(const ComplexMatrix& hermitian);
// The eigenvalues alone, in descending order (a fraction of EigenSymmetric's work at n in the
// thousands); they agree with EigenSymmetric's to rounding, not bit for bit.
std::vector<double> EigenvaluesSymmetric(const Matrix& symmetric);
// Eigenpairs in LAPACK's ascending order with eigenvector k as row k of `rows` (V^T), without
// EigenSymmetric's order and phase conventions or its transposed copies: for products that do
// not depend on either. Reads the upper triangle; throws Error as EigenSymmetric does.
struct SymmetricEigenRows {
  std::vector<double> values;
  Matrix rows;
};
SymmetricEigenRows EigenRowsSymmetric(const Matrix& symmetric);

// X with (A + ridge * mean(diag A) * I) X = B for symmetric positive (semi)definite A (Cholesky,
// LAPACKE). The ridge keeps a rank-deficient A (a constant input channel) solvable. Throws Error
// when the factorisation fails.
Matrix SolvePositiveDefinite(const Matrix& a, const Matrix& b, double ridge);
// The same, or nothing when A + ridge is not numerically positive definite.
std::optional<Matrix> TrySolvePositiveDefinite(const Matrix& a, const Matrix& b, double ridge);

// X with X (A + shift I) = B for symmetric positive definite A (+ shift, already on `factor`'s
// diagonal), X and B [k, n] row-major, one right-hand side per row: the row-major form of a
// column-major Cholesky solve, with no transposed copies. `factor` is overwritten by the factor and
// `rows` by X; false when the matrix is not numerically positive definite.
bool TrySolveRowsPositiveDefinite(Matrix& factor, Matrix& rows);

// C = A B in double (BLAS dgemm).
Matrix Multiply(const Matrix& a, const Matrix& b);
// The same into `c`, whose storage is reused when it has the size already.
void MultiplyInto(const Matrix& a, const Matrix& b, Matrix& c);
// A S, or A S^T with `transpose`, for S given as n x n row-major data (not copied).
Matrix MultiplySquare(const Matrix& a, const std::vector<double>& square, bool transpose);
// C = A B on row-major blocks inside larger matrices: A [m, k] at `a` with leading dimension
// `lda`, B [k, n] at `b` (`ldb`), C [m, n] at `c` (`ldc`), overwritten (BLAS dgemm).
void MultiplyBlocks(std::int64_t m, std::int64_t n, std::int64_t k, const double* a,
                    std::int64_t lda, const double* b, std::int64_t ldb, double* c,
                    std::int64_t ldc);
// C = A B^T on row-major blocks inside larger matrices: A [m, k] at `a` with leading dimension
// `lda`, B [n, k] at `b` (`ldb`), C [m, n] at `c` (`ldc`), overwritten (BLAS dgemm).
void MultiplyTransposedBlocks(std::int64_t m, std::int64_t n, std::int64_t k, const double* a,
                              std::int64_t lda, const double* b, std::int64_t ldb, double* c,
                              std::int64_t ldc);
// A^T B for A [k, m] and B [k, n], and A B^T for A [m, k] and B [n, k] (BLAS dgemm, no
// transposed copy).
Matrix MultiplyTransposedLeft(const Matrix& a, const Matrix& b);
Matrix MultiplyTransposedRight(const Matrix& a, const Matrix& b);
// A^T A for A [k, n], both triangles (BLAS dsyrk: half of dgemm's work).
Matrix GramOfColumns(const Matrix& a);
Matrix Transpose(const Matrix& a);
// max |A^T A - I| over all entries: 0 for orthonormal columns.
double OrthonormalityError(const Matrix& a);

}  // namespace kvfold
