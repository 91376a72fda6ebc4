#include "converter/passes/linalg.h"

#include <complex>
// LAPACKE's complex type is std::complex in C++ (must be defined before the header).
#define lapack_complex_float std::complex<float>
#define lapack_complex_double std::complex<double>
#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "calib/moment_sums.h"
#include "formats/error.h"

// The Fortran BLAS product (OpenBLAS, which LAPACKE sits on).
extern "C" void dgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const double* alpha, const double* a, const int* lda,
                       const double* b, const int* ldb, const double* beta, double* c,
                       const int* ldc);
extern "C" void dsyrk_(const char* uplo, const char* trans, const int* n, const int* k,
                       const double* alpha, const double* a, const int* lda, const double* beta,
                       double* c, const int* ldc);

namespace kvfold {
namespace {

// LAPACK's row-major eigenvectors (columns, ascending eigenvalues) -> descending order, with the
// phase convention: each vector's largest-magnitude component made real and positive.
template <typename T>
EigenPairs<T> Descending(const std::vector<T>& a, const std::vector<double>& w, std::int64_t n) {
  EigenPairs<T> e;
  e.values.resize(static_cast<std::size_t>(n));
  e.vectors = DenseMatrix<T>(n, n);
  for (std::int64_t k = 0; k < n; ++k) {
    const std::int64_t src = n - 1 - k;
    e.values[static_cast<std::size_t>(k)] = w[static_cast<std::size_t>(src)];
    std::int64_t pivot = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      e.vectors(i, k) = a[static_cast<std::size_t>(i * n + src)];
      if (std::abs(e.vectors(i, k)) > std::abs(e.vectors(pivot, k)) + 1e-12) pivot = i;
    }
    const T p = e.vectors(pivot, k);
    if (std::abs(p) == 0) continue;
    const T phase = T(std::abs(p)) / p;  // conj(p) / |p| for complex, sign(p) for real
    for (std::int64_t i = 0; i < n; ++i) e.vectors(i, k) *= phase;
  }
  return e;
}

// dsyevd on a copy of `m` (`jobz` 'V': eigenvectors into `a`, 'N': eigenvalues alone); returns
// the eigenvalues in LAPACK's ascending order.
std::vector<double> Dsyevd(const Matrix& m, char jobz, std::vector<double>& a, const char* caller) {
  if (m.rows != m.cols) Fail("linalg", std::string(caller) + " needs a square matrix");
  const lapack_int n = static_cast<lapack_int>(m.rows);
  a = m.data;
  std::vector<double> w(static_cast<std::size_t>(n));
  const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, jobz, 'U', n, a.data(), n, w.data());
  if (info != 0) Fail("linalg", "dsyevd failed (info " + std::to_string(info) + ")");
  return w;
}

}  // namespace

SymmetricEigen EigenSymmetric(const Matrix& m) {
  std::vector<double> a;
  const std::vector<double> w = Dsyevd(m, 'V', a, "EigenSymmetric");
  return Descending(a, w, m.rows);
}

std::vector<double> EigenvaluesSymmetric(const Matrix& m) {
  std::vector<double> a;
  std::vector<double> w = Dsyevd(m, 'N', a, "EigenvaluesSymmetric");
  std::reverse(w.begin(), w.end());
  return w;
}

SymmetricEigenRows EigenRowsSymmetric(const Matrix& m) {
  if (m.rows != m.cols) Fail("linalg", "EigenRowsSymmetric needs a square matrix");
  SymmetricEigenRows e;
  e.rows = m;
  e.values.resize(static_cast<std::size_t>(m.rows));
  // The row-major upper triangle is the column-major lower one; column-major eigenvectors
  // (columns) are rows of the row-major result.
  const lapack_int n = static_cast<lapack_int>(m.rows);
  const lapack_int info =
      LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', n, e.rows.data.data(), n, e.values.data());
  if (info != 0) Fail("linalg", "dsyevd failed (info " + std::to_string(info) + ")");
  return e;
}

HermitianEigen EigenHermitian(const ComplexMatrix& m) {
  if (m.rows != m.cols) Fail("linalg", "EigenHermitian needs a square matrix");
  const lapack_int n = static_cast<lapack_int>(m.rows);
  std::vector<lapack_complex_double> a = m.data;
  std::vector<double> w(static_cast<std::size_t>(n));
  const lapack_int info = LAPACKE_zheevd(LAPACK_ROW_MAJOR, 'V', 'U', n, a.data(), n, w.data());
  if (info != 0) Fail("linalg", "zheevd failed (info " + std::to_string(info) + ")");
  return Descending(a, w, n);
}

Matrix SolvePositiveDefinite(const Matrix& a, const Matrix& b, double ridge) {
  std::optional<Matrix> x = TrySolvePositiveDefinite(a, b, ridge);
  if (!x) Fail("linalg", "Cholesky solve failed: the calibration moment is not positive definite");
  return std::move(*x);
}

std::optional<Matrix> TrySolvePositiveDefinite(const Matrix& a, const Matrix& b, double ridge) {
  if (a.rows != a.cols || b.rows != a.rows)
    Fail("linalg", "internal: SolvePositiveDefinite shapes disagree");
  const lapack_int n = static_cast<lapack_int>(a.rows), nrhs = static_cast<lapack_int>(b.cols);
  double mean_diag = 0;
  for (std::int64_t i = 0; i < a.rows; ++i) mean_diag += a(i, i) / static_cast<double>(a.rows);
  Matrix factor = a, x = b;
  for (std::int64_t i = 0; i < a.rows; ++i) factor(i, i) += ridge * std::max(mean_diag, 1e-300);
  const lapack_int info =
      LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', n, nrhs, factor.data.data(), n, x.data.data(), nrhs);
  if (info > 0) return std::nullopt;  // a leading minor is not positive definite
  if (info < 0) Fail("linalg", "internal: dposv argument " + std::to_string(-info) + " is invalid");
  return x;
}

bool TrySolveRowsPositiveDefinite(Matrix& factor, Matrix& rows) {
  if (factor.rows != factor.cols || rows.cols != factor.rows)
    Fail("linalg", "internal: TrySolveRowsPositiveDefinite shapes disagree");
  // Row-major X [k, n] is column-major X^T [n, k]: X A = B is A X^T = B^T for symmetric A.
  const lapack_int n = static_cast<lapack_int>(factor.rows), k = static_cast<lapack_int>(rows.rows);
  const lapack_int info =
      LAPACKE_dposv(LAPACK_COL_MAJOR, 'U', n, k, factor.data.data(), n, rows.data.data(), n);
  if (info > 0) return false;  // a leading minor is not positive definite
  if (info < 0) Fail("linalg", "internal: dposv argument " + std::to_string(-info) + " is invalid");
  return true;
}

namespace {

// Row-major C [rows, cols] = A [rows, inner] op(B), B's row-major data `b` with leading dimension
// `ldb`: column-major C^T = op(B)^T A^T, and B's row-major data is B^T column-major.
void Gemm(const Matrix& a, const double* b, bool transpose_b, std::int64_t ldb, Matrix& c) {
  if (c.data.empty() || a.cols == 0) {
    std::fill(c.data.begin(), c.data.end(), 0.0);
    return;
  }
  const int m = static_cast<int>(c.cols), n = static_cast<int>(a.rows),
            k = static_cast<int>(a.cols), ld = static_cast<int>(ldb);
  const double one = 1.0, zero = 0.0;
  dgemm_(transpose_b ? "T" : "N", "N", &m, &n, &k, &one, b, &ld, a.data.data(), &k, &zero,
         c.data.data(), &m);
}

void Resize(Matrix& c, std::int64_t rows, std::int64_t cols) {
  c.rows = rows, c.cols = cols;
  c.data.resize(static_cast<std::size_t>(rows * cols));  // every element is written by dgemm
}

// Row-major C [m, n] = A op(B) on blocks, as column-major C^T = op(B)^T A^T: B's row-major data
// is B^T column-major, so `b_op` "N" gives C = A B and "T" gives C = A B^T.
void RowMajorBlockProduct(const char* b_op, std::int64_t m, std::int64_t n, std::int64_t k,
                          const double* a, std::int64_t lda, const double* b, std::int64_t ldb,
                          double* c, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  const int mm = static_cast<int>(m), nn = static_cast<int>(n), kk = static_cast<int>(k),
            la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const double one = 1.0, zero = 0.0;
  dgemm_(b_op, "N", &nn, &mm, &kk, &one, b, &lb, a, &la, &zero, c, &lc);
}

}  // namespace

void MultiplyTransposedBlocks(std::int64_t m, std::int64_t n, std::int64_t k, const double* a,
                              std::int64_t lda, const double* b, std::int64_t ldb, double* c,
                              std::int64_t ldc) {
  RowMajorBlockProduct("T", m, n, k, a, lda, b, ldb, c, ldc);
}

void MultiplyBlocks(std::int64_t m, std::int64_t n, std::int64_t k, const double* a,
                    std::int64_t lda, const double* b, std::int64_t ldb, double* c,
                    std::int64_t ldc) {
  RowMajorBlockProduct("N", m, n, k, a, lda, b, ldb, c, ldc);
}

Matrix Multiply(const Matrix& a, const Matrix& b) {
  Matrix c;
  MultiplyInto(a, b, c);
  return c;
}

void MultiplyInto(const Matrix& a, const Matrix& b, Matrix& c) {
  if (a.cols != b.rows) Fail("linalg", "Multiply: inner dimensions differ");
  Resize(c, a.rows, b.cols);
  Gemm(a, b.data.data(), false, b.cols, c);
}

Matrix MultiplySquare(const Matrix& a, const std::vector<double>& square, bool transpose) {
  if (static_cast<std::int64_t>(square.size()) != a.cols * a.cols)
    Fail("linalg", "MultiplySquare: the square's size differs from A's columns");
  Matrix c;
  Resize(c, a.rows, a.cols);
  Gemm(a, square.data(), transpose, a.cols, c);
  return c;
}

Matrix MultiplyTransposedLeft(const Matrix& a, const Matrix& b) {
  if (a.rows != b.rows) Fail("linalg", "MultiplyTransposedLeft: inner dimensions differ");
  Matrix c;
  Resize(c, a.cols, b.cols);
  if (c.data.empty()) return c;
  if (a.rows == 0) {
    std::fill(c.data.begin(), c.data.end(), 0.0);
    return c;
  }
  // Column-major C^T [n, m] = B^T A: B's row-major data is B^T column-major, A's is A^T.
  const int m = static_cast<int>(a.cols), n = static_cast<int>(b.cols),
            k = static_cast<int>(a.rows);
  const double one = 1.0, zero = 0.0;
  dgemm_("N", "T", &n, &m, &k, &one, b.data.data(), &n, a.data.data(), &m, &zero, c.data.data(),
         &n);
  return c;
}

Matrix MultiplyTransposedRight(const Matrix& a, const Matrix& b) {
  if (a.cols != b.cols) Fail("linalg", "MultiplyTransposedRight: inner dimensions differ");
  Matrix c;
  Resize(c, a.rows, b.rows);
  Gemm(a, b.data.data(), true, b.cols, c);
  return c;
}

Matrix GramOfColumns(const Matrix& a) {
  Matrix g(a.cols, a.cols);
  if (g.data.empty() || a.rows == 0) return g;
  // A's row-major data is A^T [n, k] column-major: dsyrk's A A^T of it is A^T A, whose upper
  // triangle column-major is the lower one row-major.
  const int n = static_cast<int>(a.cols), k = static_cast<int>(a.rows);
  const double one = 1.0, zero = 0.0;
  dsyrk_("U", "N", &n, &k, &one, a.data.data(), &n, &zero, g.data.data(), &n);
  MirrorLowerTriangle(g.data.data(), g.rows);
  return g;
}

Matrix Transpose(const Matrix& a) {
  Matrix t(a.cols, a.rows);
  for (std::int64_t i = 0; i < a.rows; ++i) {
    for (std::int64_t j = 0; j < a.cols; ++j) t(j, i) = a(i, j);
  }
  return t;
}

double OrthonormalityError(const Matrix& a) {
  const Matrix g = Multiply(Transpose(a), a);
  double worst = 0;
  for (std::int64_t i = 0; i < g.rows; ++i) {
    for (std::int64_t j = 0; j < g.cols; ++j)
      worst = std::max(worst, std::abs(g(i, j) - (i == j ? 1.0 : 0.0)));
  }
  return worst;
}

}  // namespace kvfold
