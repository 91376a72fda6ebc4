#include "converter/passes/output_refit.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <optional>

#include "converter/passes/linalg.h"
#include "formats/error.h"

namespace kvfold {
namespace {

Matrix Square(const std::vector<double>& v, std::int64_t n) {
  Matrix m(n, n);
  m.data = v;
  return m;
}

// sum of a_ij b_ij = tr(a^T b).
double Dot(const Matrix& a, const Matrix& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) s += a.data[i] * b.data[i];
  return s;
}

// One part's sums turned into what the refit needs from them, once: the normal equations'
// C_cc and C_cs W_s^T, and the output energy sum ||W_s c_s||^2 that errors are relative to. A part
// without tokens (no held-out windows) holds nothing.
class PartSystem {
 public:
  PartSystem(const OutputRefitMoments::Part& p, std::int64_t dim, const Matrix& source_t) {
    if (p.tokens == 0) return;
    cc_ = Square(p.cc, dim);
    cs_source_ = Multiply(Square(p.cs, dim), source_t);
    norm_ = Dot(source_t, Multiply(Square(p.ss, dim), source_t));
    for (std::int64_t i = 0; i < dim; ++i) mean_diag_ += cc_(i, i) / static_cast<double>(dim);
  }
  bool empty() const { return norm_ <= 0; }
  // sum ||W c_c - W_s c_s||^2 / sum ||W_s c_s||^2 for W given as W^T; 0 on an empty part.
  double Error(const Matrix& w_t) const {
    if (empty()) return 0.0;
    return (Dot(w_t, Multiply(cc_, w_t)) - 2 * Dot(w_t, cs_source_) + norm_) / norm_;
  }
  // W^T from (C_cc + lambda I) W^T = C_cs W_s^T + lambda W_c^T; nothing when C_cc + lambda I is
  // numerically singular (fewer tokens than context dimensions and a tiny ridge).
  std::optional<Matrix> Fit(const Matrix& folded_t, double ridge) const {
    ridge = std::max(ridge, kMinRefitRidge);
    const double lambda = ridge * std::max(mean_diag_, 1e-300);  // as SolvePositiveDefinite adds it
    Matrix rhs = cs_source_;
    for (std::size_t i = 0; i < rhs.data.size(); ++i) rhs.data[i] += lambda * folded_t.data[i];
    return TrySolvePositiveDefinite(cc_, rhs, ridge);
  }

 private:
  Matrix cc_, cs_source_;
  double norm_ = 0, mean_diag_ = 0;
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// [hidden, dim] row-major -> its transpose [dim, hidden].
Matrix Transposed(const std::vector<double>& w, std::int64_t hidden, std::int64_t dim) {
  if (dim <= 0 || static_cast<std::int64_t>(w.size()) != hidden * dim) {
    Fail("refit", "internal: o_proj and the context moments disagree in size");
  }
  Matrix m(hidden, dim);
  m.data = w;
  return Transpose(m);
}

}  // namespace

const std::vector<double>& RefitRidgeGrid() {
  static const std::vector<double> grid = {0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  return grid;
}

OutputRefit RefitOutput(const std::vector<double>& source_wo, const std::vector<double>& folded_wo,
                        std::int64_t hidden, const OutputRefitMoments& m, double ridge) {
  const std::int64_t dim = m.dim;
  const Matrix source_t = Transposed(source_wo, hidden, dim),
               folded_t = Transposed(folded_wo, hidden, dim);
  const PartSystem held_out(m.held_out, dim, source_t), fit(m.fit, dim, source_t);
  OutputRefit r;
  std::optional<Matrix> fit_only;  // the chosen ridge's solution on the fit windows alone
  if (ridge < 0) {
    if (held_out.empty()) {
      Fail("--passes",
           "gqa-svd: refit=o with ridge=auto needs at least 2 calibration windows (one is held out "
           "to "
           "choose the ridge); give more calibration text, a fixed ridge=R, or refit=none");
    }
    double best = held_out.Error(folded_t);  // keeping the fold's o_proj is a candidate too
    for (double candidate : RefitRidgeGrid()) {
      std::optional<Matrix> w_t = fit.Fit(folded_t, candidate);
      const double error = w_t ? held_out.Error(*w_t) : kNaN;  // NaN (skipped) when singular
      r.tried.emplace_back(candidate, error);
      if (error < best) best = error, ridge = candidate, fit_only = std::move(w_t);
    }
  } else if (!held_out.empty()) {
    fit_only = fit.Fit(folded_t, ridge);
  }
  if (!held_out.empty()) {
    r.held_out_before = held_out.Error(folded_t);
    r.held_out_after = ridge < 0 ? r.held_out_before : fit_only ? held_out.Error(*fit_only) : kNaN;
  }
  r.fit_before = fit.Error(folded_t);
  if (ridge < 0) {  // auto kept the fold's o_proj
    r.wo = folded_wo;
    r.fit_after = r.fit_before;
    return r;
  }
  // On every window; a system that is singular there (borderline where the fit windows alone
  // were not) falls back to the fit windows' solution.
  std::optional<Matrix> w_t = PartSystem(m.All(), dim, source_t).Fit(folded_t, ridge);
  if (!w_t) w_t = fit_only ? std::move(fit_only) : fit.Fit(folded_t, ridge);
  if (!w_t) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", ridge);
    Fail("--passes", "gqa-svd: refit=o with ridge=" + std::string(text) +
                         ": the attention context's second moment "
                         "is singular (fewer calibration tokens than its dimensions?); use "
                         "ridge=auto or a larger ridge");
  }
  r.ridge = ridge;
  r.fit_after = fit.Error(*w_t);
  r.wo = Transpose(*w_t).data;
  return r;
}

}  // namespace kvfold
