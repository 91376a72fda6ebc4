#include "converter/passes/linalg.h"

#include <catch2/catch.hpp>
#include <random>

using namespace kvfold;

TEST_CASE("symmetric eigendecomposition: orthonormal, descending, reconstructs", "[linalg]") {
  std::mt19937 rng(7);
  std::normal_distribution<double> n01;
  Matrix x(40, 12);
  for (auto& v : x.data) v = n01(rng);
  const Matrix s = Multiply(Transpose(x), x);  // symmetric positive semi-definite
  const SymmetricEigen e = EigenSymmetric(s);
  CHECK(OrthonormalityError(e.vectors) < 1e-12);
  for (std::size_t k = 1; k < e.values.size(); ++k) CHECK(e.values[k - 1] >= e.values[k]);
  // V diag(w) V^T == S
  Matrix vd = e.vectors;
  for (std::int64_t i = 0; i < vd.rows; ++i) {
    for (std::int64_t k = 0; k < vd.cols; ++k) vd(i, k) *= e.values[static_cast<std::size_t>(k)];
  }
  const Matrix back = Multiply(vd, Transpose(e.vectors));
  for (std::size_t i = 0; i < s.data.size(); ++i)
    CHECK(back.data[i] == Approx(s.data[i]).margin(1e-9));
  // Phase convention: the largest component of each eigenvector is positive.
  for (std::int64_t k = 0; k < e.vectors.cols; ++k) {
    double best = 0;
    for (std::int64_t i = 0; i < e.vectors.rows; ++i) {
      if (std::abs(e.vectors(i, k)) > std::abs(best)) best = e.vectors(i, k);
    }
    CHECK(best > 0);
  }
}

TEST_CASE("eigenvectors as rows: orthonormal, ascending, reconstruct, upper triangle only",
          "[linalg]") {
  std::mt19937 rng(8);
  std::normal_distribution<double> n01;
  Matrix x(30, 9);
  for (auto& v : x.data) v = n01(rng);
  Matrix s = Multiply(Transpose(x), x);
  // The lower triangle is not read: garbage there changes nothing.
  for (std::int64_t i = 0; i < s.rows; ++i) {
    for (std::int64_t j = 0; j < i; ++j) s(i, j) = 1e6 * (i + j);
  }
  const SymmetricEigenRows e = EigenRowsSymmetric(s);
  CHECK(OrthonormalityError(Transpose(e.rows)) < 1e-12);
  for (std::size_t k = 1; k < e.values.size(); ++k) CHECK(e.values[k - 1] <= e.values[k]);
  // V^T's rows: sum_k w_k v_k v_k^T == S (upper triangle as given), 1e-9 as above.
  for (std::int64_t i = 0; i < s.rows; ++i) {
    for (std::int64_t j = i; j < s.cols; ++j) {
      double sum = 0;
      for (std::int64_t k = 0; k < s.rows; ++k)
        sum += e.values[static_cast<std::size_t>(k)] * e.rows(k, i) * e.rows(k, j);
      CHECK(sum == Approx(s(i, j)).margin(1e-9));
    }
  }
}

TEST_CASE("Hermitian eigendecomposition finds a known rank-1 direction", "[linalg]") {
  // C = u u^H with u = (1, i, 1 - i) / 2: one eigenvalue |u|^2 = 1, the rest 0.
  const std::vector<Complex> u = {{0.5, 0}, {0, 0.5}, {0.5, -0.5}};
  ComplexMatrix c(3, 3);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) c(i, j) = u[i] * std::conj(u[j]);
  }
  const HermitianEigen e = EigenHermitian(c);
  CHECK(e.values[0] == Approx(1.0));
  CHECK(std::abs(e.values[1]) < 1e-12);
  // The eigenvector equals u up to a phase; the convention makes the largest entry real > 0.
  const Complex phase = e.vectors(0, 0) / u[0];
  CHECK(std::abs(std::abs(phase) - 1) < 1e-12);
  for (int i = 0; i < 3; ++i) CHECK(std::abs(e.vectors(i, 0) - phase * u[i]) < 1e-12);
}

namespace {

Matrix Random(std::int64_t rows, std::int64_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  Matrix m(rows, cols);
  for (auto& v : m.data) v = n01(rng);
  return m;
}

// max |a - b| / max |b|.
double RelativeDiff(const Matrix& a, const Matrix& b) {
  REQUIRE(a.data.size() == b.data.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) {
    diff = std::max(diff, std::abs(a.data[i] - b.data[i]));
    scale = std::max(scale, std::abs(b.data[i]));
  }
  return diff / scale;
}

}  // namespace

TEST_CASE("products with a square given as data, and into a reused matrix", "[linalg]") {
  const Matrix a = Random(7, 5, 1), s = Random(5, 5, 2);
  // Both against the same dgemm on an explicit transpose: the same products in the same order.
  CHECK(RelativeDiff(MultiplySquare(a, s.data, false), Multiply(a, s)) < 1e-15);
  CHECK(RelativeDiff(MultiplySquare(a, s.data, true), Multiply(a, Transpose(s))) < 1e-15);
  Matrix c = Random(3, 9, 3);  // another shape: resized
  MultiplyInto(a, s, c);
  CHECK((c.rows == 7 && c.cols == 5));
  CHECK(RelativeDiff(c, Multiply(a, s)) < 1e-15);
  // Against a plain triple loop: summation order may differ, 1e-12 is far above double rounding
  // over 5 terms and far below any indexing mistake.
  for (std::int64_t i = 0; i < 7; ++i) {
    for (std::int64_t j = 0; j < 5; ++j) {
      double sum = 0, sum_t = 0;
      for (std::int64_t k = 0; k < 5; ++k) sum += a(i, k) * s(k, j), sum_t += a(i, k) * s(j, k);
      CHECK(std::abs(MultiplySquare(a, s.data, false)(i, j) - sum) < 1e-12);
      CHECK(std::abs(MultiplySquare(a, s.data, true)(i, j) - sum_t) < 1e-12);
    }
  }
}

TEST_CASE("A^T B, A B^T and the Gram matrix A^T A against plain loops", "[linalg]") {
  const Matrix a = Random(7, 4, 11), b = Random(7, 3, 12);
  const Matrix atb = MultiplyTransposedLeft(a, b), gram = GramOfColumns(a);
  const Matrix abt = MultiplyTransposedRight(Transpose(a), Transpose(b));  // A^T B again
  REQUIRE((atb.rows == 4 && atb.cols == 3 && gram.rows == 4 && gram.cols == 4));
  // Plain loops: summation order may differ, 1e-12 is far above double rounding over 7 terms and
  // far below any indexing or triangle mistake (every entry of both triangles is checked).
  for (std::int64_t i = 0; i < 4; ++i) {
    for (std::int64_t j = 0; j < 4; ++j) {
      double ab = 0, aa = 0;
      for (std::int64_t k = 0; k < 7; ++k) {
        if (j < 3) ab += a(k, i) * b(k, j);
        aa += a(k, i) * a(k, j);
      }
      if (j < 3) CHECK(std::abs(atb(i, j) - ab) < 1e-12);
      if (j < 3) CHECK(std::abs(abt(i, j) - ab) < 1e-12);
      CHECK(std::abs(gram(i, j) - aa) < 1e-12);
    }
  }
  CHECK(GramOfColumns(Matrix(0, 3)).data == std::vector<double>(9, 0.0));  // no rows: zero
}

// C = columns 4..6 of a [6, 10] matrix, written by `product` from A = columns 2..5 of a [6, 9]
// matrix and `b(k, j)`, the B element that A's column k meets for C's column j. C's other entries
// must stay as they were.
template <typename Product, typename BElement>
void CheckBlockProduct(const Matrix& big_a, Product product, BElement b) {
  Matrix big_c = Random(6, 10, 8);
  const Matrix before = big_c;
  product(&big_a.data[2], &big_c(0, 4));
  for (std::int64_t i = 0; i < 6; ++i) {
    for (std::int64_t j = 0; j < 10; ++j) {
      if (j < 4 || j >= 7) {
        CHECK(big_c(i, j) == before(i, j));
        continue;
      }
      // A plain loop: summation order may differ, 1e-12 is far above double rounding over 4
      // terms and far below any indexing mistake.
      double sum = 0;
      for (std::int64_t k = 0; k < 4; ++k) sum += big_a(i, 2 + k) * b(k, j - 4);
      CHECK(std::abs(big_c(i, j) - sum) < 1e-12);
    }
  }
}

TEST_CASE("a product of blocks inside larger matrices writes only its block", "[linalg]") {
  // A B^T with B = rows 1..3, columns 3..6 of a [5, 8] matrix.
  const Matrix big_a = Random(6, 9, 6), big_b = Random(5, 8, 7);
  CheckBlockProduct(
      big_a,
      [&](const double* a, double* c) {
        MultiplyTransposedBlocks(6, 3, 4, a, 9, &big_b.data[1 * 8 + 3], 8, c, 10);
      },
      [&](std::int64_t k, std::int64_t j) { return big_b(1 + j, 3 + k); });
}

TEST_CASE("a product A B of blocks inside larger matrices writes only its block", "[linalg]") {
  // A B with B = rows 1..4, columns 3..5 of a [7, 8] matrix.
  const Matrix big_a = Random(6, 9, 9), big_b = Random(7, 8, 10);
  CheckBlockProduct(
      big_a,
      [&](const double* a, double* c) {
        MultiplyBlocks(6, 3, 4, a, 9, &big_b.data[1 * 8 + 3], 8, c, 10);
      },
      [&](std::int64_t k, std::int64_t j) { return big_b(1 + k, 3 + j); });
}

TEST_CASE("the row-major Cholesky solve gives X with X A = B", "[linalg]") {
  const Matrix x = Random(30, 6, 4);
  const Matrix a = Multiply(Transpose(x), x);  // symmetric positive definite, 6 x 6
  const Matrix b = Random(4, 6, 5);            // four right-hand sides, one per row
  Matrix factor = a, rows = b;
  REQUIRE(TrySolveRowsPositiveDefinite(factor, rows));
  // Residual of X A = B relative to B; a well-conditioned 6 x 6 system solves to ~1e-15.
  CHECK(RelativeDiff(Multiply(rows, a), b) < 1e-12);
  // The column-major solve of A X^T = B^T: the same as the row-major LAPACKE call.
  CHECK(RelativeDiff(rows, Transpose(SolvePositiveDefinite(a, Transpose(b), 0.0))) < 1e-12);
  Matrix singular(6, 6), copy = b;  // zero: no leading minor is positive
  CHECK_FALSE(TrySolveRowsPositiveDefinite(singular, copy));
}
