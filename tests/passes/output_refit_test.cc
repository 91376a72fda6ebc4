// The o_proj refit's math (converter/passes/output_refit.h) on synthetic context moments whose
// exact answer is known.
#include "converter/passes/output_refit.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "converter/passes/linalg.h"
#include "formats/error.h"

using namespace kvfold;

namespace {

constexpr std::int64_t kDim = 6, kHidden = 5;

std::vector<double> Random(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<double> n01;
  std::vector<double> v(n);
  for (double& x : v) x = n01(rng);
  return v;
}

// Contexts c_c (random) and c_s = T c_c + noise * N(0, 1), summed into `part` in double.
void AddTokens(OutputRefitMoments::Part& part, const std::vector<double>& t, int tokens,
               double noise, std::mt19937& rng) {
  for (std::vector<double>* m : {&part.cc, &part.cs, &part.ss}) m->assign(kDim * kDim, 0.0);
  for (int n = 0; n < tokens; ++n) {
    const std::vector<double> c = Random(kDim, rng), e = Random(kDim, rng);
    std::vector<double> s(kDim, 0.0);
    for (std::int64_t i = 0; i < kDim; ++i) {
      for (std::int64_t j = 0; j < kDim; ++j) s[i] += t[i * kDim + j] * c[j];
      s[i] += noise * e[i];
    }
    for (std::int64_t i = 0; i < kDim; ++i) {
      for (std::int64_t j = 0; j < kDim; ++j) {
        part.cc[i * kDim + j] += c[i] * c[j];
        part.cs[i * kDim + j] += c[i] * s[j];
        part.ss[i * kDim + j] += s[i] * s[j];
      }
    }
  }
  part.tokens = tokens;
}

// A signed permutation: orthogonal, as the value basis of a lossless fold is.
std::vector<double> SignedPermutation() {
  std::vector<double> p(kDim * kDim, 0.0);
  for (std::int64_t i = 0; i < kDim; ++i) p[i * kDim + (i * 5 + 1) % kDim] = i % 2 ? -1.0 : 1.0;
  return p;
}

std::vector<double> Identity() {
  std::vector<double> id(kDim * kDim, 0.0);
  for (std::int64_t i = 0; i < kDim; ++i) id[i * kDim + i] = 1;
  return id;
}

// W_s T: what o_proj must become when the fold turned the context c_s into c_c = T^-1 c_s.
std::vector<double> Times(const std::vector<double>& wo, const std::vector<double>& t) {
  std::vector<double> out(kHidden * kDim, 0.0);
  for (std::int64_t r = 0; r < kHidden; ++r) {
    for (std::int64_t j = 0; j < kDim; ++j) {
      for (std::int64_t k = 0; k < kDim; ++k)
        out[r * kDim + j] += wo[r * kDim + k] * t[k * kDim + j];
    }
  }
  return out;
}

double MaxDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

}  // namespace

TEST_CASE("an exactly linear context error is undone by the unregularised refit", "[refit]") {
  std::mt19937 rng(7);
  const std::vector<double> source = Random(kHidden * kDim, rng), t = Random(kDim * kDim, rng);
  OutputRefitMoments m;
  m.dim = kDim;
  AddTokens(m.fit, t, 300, 0.0, rng);
  AddTokens(m.held_out, t, 100, 0.0, rng);
  const OutputRefit r = RefitOutput(source, source, kHidden, m, 0.0);
  // W c_c = W_s T c_c for every token has the one solution W = W_s T; the 1e-9 ridge floor and
  // double rounding on a well-conditioned 6x6 system move it by far less than 1e-6.
  CHECK(MaxDiff(r.wo, Times(source, t)) < 1e-6);
  CHECK(r.ridge == 0.0);
  CHECK(r.held_out_before > 0.1);  // a random T is a large error
  CHECK(r.held_out_after < 1e-10);
  CHECK(r.fit_after < 1e-10);
}

TEST_CASE("after a lossless fold the refit keeps the fold's o_proj, at any ridge", "[refit]") {
  std::mt19937 rng(8);
  const std::vector<double> source = Random(kHidden * kDim, rng), t = SignedPermutation();
  const std::vector<double> folded = Times(source, t);  // W_c c_c = W_s c_s for every token
  OutputRefitMoments m;
  m.dim = kDim;
  AddTokens(m.fit, t, 50, 0.0, rng);
  AddTokens(m.held_out, t, 20, 0.0, rng);
  for (double ridge : {0.0, 1e-3, 1.0, -1.0}) {
    INFO("ridge " << ridge);
    const OutputRefit r = RefitOutput(source, folded, kHidden, m, ridge);
    // Both terms of the objective vanish at W_c: the solve returns it up to rounding.
    CHECK(MaxDiff(r.wo, folded) < 1e-9);
    CHECK(r.fit_before < 1e-12);
  }
}

TEST_CASE("ridge=auto keeps the fold's o_proj when every refit is worse on the held-out windows",
          "[refit]") {
  std::mt19937 rng(9);
  const std::vector<double> source = Random(kHidden * kDim, rng);
  OutputRefitMoments m;
  m.dim = kDim;
  AddTokens(m.fit, Random(kDim * kDim, rng), 200, 0.0, rng);  // the fit windows say "transform"
  AddTokens(m.held_out, Identity(), 100, 0.0, rng);           // the held-out ones say "no error"
  const OutputRefit r = RefitOutput(source, source, kHidden, m, -1);
  CHECK(r.ridge == -1);
  CHECK(r.wo == source);  // kept, not refit: the same numbers
  CHECK(r.tried.size() == RefitRidgeGrid().size());
  CHECK(r.held_out_after == r.held_out_before);
}

TEST_CASE("ridge=auto picks the grid ridge that scores best on the held-out windows", "[refit]") {
  std::mt19937 rng(10);
  const std::vector<double> source = Random(kHidden * kDim, rng), t = Random(kDim * kDim, rng);
  OutputRefitMoments m;
  m.dim = kDim;
  AddTokens(m.fit, t, 12, 2.0, rng);  // few, noisy fit tokens: the unregularised fit overfits
  AddTokens(m.held_out, t, 400, 0.0, rng);
  const OutputRefit r = RefitOutput(source, source, kHidden, m, -1);
  REQUIRE(r.ridge >= 0);
  double best = r.held_out_before;
  for (const auto& [ridge, error] : r.tried) best = std::min(best, error);
  CHECK(r.held_out_after == best);  // the best ridge's error, as tried
  CHECK(r.held_out_after < r.held_out_before);
}

TEST_CASE("ridge=auto without held-out windows is refused", "[refit]") {
  std::mt19937 rng(11);
  const std::vector<double> source = Random(kHidden * kDim, rng);
  OutputRefitMoments m;
  m.dim = kDim;
  AddTokens(m.fit, Identity(), 50, 0.0, rng);
  CHECK_THROWS_WITH(RefitOutput(source, source, kHidden, m, -1),
                    Catch::Contains("needs at least 2 calibration windows"));
  CHECK_NOTHROW(
      RefitOutput(source, source, kHidden, m, 1e-3));  // a fixed ridge needs no held-out windows
}

TEST_CASE(
    "a ridge whose system is not positive definite is skipped by auto and refused when written",
    "[refit]") {
  std::mt19937 rng(12);
  const std::vector<double> source = Random(kHidden * kDim, rng);
  OutputRefitMoments m;
  m.dim = kDim;
  AddTokens(m.fit, Identity(), 50, 0.0, rng);
  AddTokens(m.held_out, Identity(), 50, 0.0, rng);
  // What float32 sums of too few tokens can leave: a direction with a slightly negative second
  // moment, which small ridges do not lift (1e-1 of the mean diagonal does).
  for (auto* part : {&m.fit, &m.held_out}) {
    for (std::int64_t i = 0; i < kDim; ++i)
      part->cc[i * kDim + kDim - 1] = part->cc[(kDim - 1) * kDim + i] = 0;
    part->cc[kDim * kDim - 1] = -1e-2 * part->cc[0];
  }
  const OutputRefit r = RefitOutput(source, source, kHidden, m, -1);
  REQUIRE(r.tried.size() == RefitRidgeGrid().size());
  CHECK(std::isnan(r.tried.front().second));  // ridge 0: skipped
  CHECK(!std::isnan(r.tried.back().second));  // ridge 1: solved
  CHECK_THROWS_WITH(RefitOutput(source, source, kHidden, m, 0.0),
                    Catch::Contains("second moment is singular"));
}

TEST_CASE("ridge=auto's held-out errors are each grid ridge's refit solved and scored alone",
          "[refit]") {
  std::mt19937 rng(13);
  const std::vector<double> source = Random(kHidden * kDim, rng), t = Random(kDim * kDim, rng),
                            folded = Random(kHidden * kDim, rng);  // far from W_s T: ridges matter
  OutputRefitMoments m;
  m.dim = kDim;
  AddTokens(m.fit, t, 40, 1.0, rng);
  AddTokens(m.held_out, t, 100, 0.5, rng);
  const OutputRefit r = RefitOutput(source, folded, kHidden, m, -1);
  REQUIRE(r.tried.size() == RefitRidgeGrid().size());
  for (const auto& [ridge, error] : r.tried) {
    INFO("ridge " << ridge);
    // auto scores every ridge from one eigendecomposition; a fixed ridge is a Cholesky solve on
    // the fit windows, scored on the held-out ones. Both are exact for this well-conditioned 6 x 6
    // system up to double rounding (~1e-14); 1e-9 is far below what a wrong term would move.
    const OutputRefit alone = RefitOutput(source, folded, kHidden, m, ridge);
    CHECK(error == Approx(alone.held_out_after).epsilon(1e-9));
  }
  CHECK(r.tried.back().second != Approx(r.tried.front().second).epsilon(1e-3));  // ridges differ
}

namespace {

// Moments of `tokens` random contexts c_c of width `dim` and c_s = T c_c + noise, in double.
OutputRefitMoments::Part WidePart(std::int64_t dim, int tokens, const Matrix& t,
                                  std::mt19937& rng) {
  Matrix c(tokens, dim), noise(tokens, dim);
  std::normal_distribution<double> n01;
  for (double& x : c.data) x = n01(rng);
  for (double& x : noise.data) x = 0.3 * n01(rng);
  Matrix s = Multiply(c, Transpose(t));
  for (std::size_t i = 0; i < s.data.size(); ++i) s.data[i] += noise.data[i];
  const Matrix ct = Transpose(c), st = Transpose(s);
  OutputRefitMoments::Part p;
  p.tokens = tokens;
  p.cc = Multiply(ct, c).data, p.cs = Multiply(ct, s).data, p.ss = Multiply(st, s).data;
  return p;
}

}  // namespace

TEST_CASE("ridge=auto's held-out errors hold for a context wider than one block", "[refit]") {
  // 300 > the 256-row blocks the held-out path is reduced in: a full block and a part.
  constexpr std::int64_t dim = 300, hidden = 20;
  std::mt19937 rng(14);
  Matrix t(dim, dim);
  std::normal_distribution<double> n01;
  for (double& x : t.data) x = n01(rng) / std::sqrt(static_cast<double>(dim));
  OutputRefitMoments m;
  m.dim = dim;
  m.fit = WidePart(dim, 500, t, rng), m.held_out = WidePart(dim, 200, t, rng);
  std::vector<double> source(hidden * dim), folded(hidden * dim);
  for (double& x : source) x = n01(rng);
  for (double& x : folded) x = n01(rng);
  const OutputRefit r = RefitOutput(source, folded, hidden, m, -1);
  REQUIRE(r.tried.size() == RefitRidgeGrid().size());
  for (const auto& [ridge, error] : r.tried) {
    INFO("ridge " << ridge);
    // 500 tokens in 300 dimensions: C_cc's condition number is about 60, so the two exact
    // routes agree to double rounding times that; 1e-9 is far below a wrong block or triangle.
    CHECK(error ==
          Approx(RefitOutput(source, folded, hidden, m, ridge).held_out_after).epsilon(1e-9));
  }
}
