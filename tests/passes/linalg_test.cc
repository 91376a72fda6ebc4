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
