#include "converter/passes/output_refit.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <utility>

#include "converter/passes/linalg.h"
#include "formats/error.h"

namespace kvfold {
namespace {

// sum a_ij b_ij = tr(a^T b).
double Dot(const Matrix& a, const Matrix& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) s += a.data[i] * b.data[i];
  return s;
}

// o_proj's layout, [hidden, dim] row-major, which the whole refit keeps: the solve is column-major
// on the same bytes (TrySolveRowsPositiveDefinite), so nothing is transposed.
Matrix Rows(const std::vector<double>& w, std::int64_t hidden, std::int64_t dim) {
  if (dim <= 0 || static_cast<std::int64_t>(w.size()) != hidden * dim) {
    Fail("refit", "internal: o_proj and the context moments disagree in size");
  }
  Matrix m;
  m.rows = hidden, m.cols = dim, m.data = w;
  return m;
}

// Reused from one grid ridge to the next: at a 7B layer each is 128 MiB, and fresh memory for
// every one was most of the refit's page faults (docs/results.md, "The refit's sums and solve").
struct Workspace {
  Matrix factor, product;
};

// One part's sums turned into what the refit needs from them, once, for W in o_proj's layout:
// C_cc, the normal equations' right side W_s C_cs^T, and the output energy sum ||W_s c_s||^2 =
// tr(W_s C_ss W_s^T) that errors are relative to. A part without tokens holds nothing.
class PartSystem {
 public:
  PartSystem(const OutputRefitMoments::Part& p, std::int64_t dim, const Matrix& source) {
    if (p.tokens == 0) return;
    cc_ = Rows(p.cc, dim, dim);
    rhs_ = MultiplySquare(source, p.cs, /*transpose=*/true);
    norm_ = Dot(source, MultiplySquare(source, p.ss, /*transpose=*/false));
    for (std::int64_t i = 0; i < dim; ++i) mean_diag_ += cc_(i, i) / static_cast<double>(dim);
  }
  // Both parts' sums: every calibration window.
  PartSystem(const PartSystem& a, const PartSystem& b) : PartSystem(a.cc_.data.empty() ? b : a) {
    if (a.cc_.data.empty() || b.cc_.data.empty()) return;
    for (std::size_t i = 0; i < cc_.data.size(); ++i) cc_.data[i] += b.cc_.data[i];
    for (std::size_t i = 0; i < rhs_.data.size(); ++i) rhs_.data[i] += b.rhs_.data[i];
    norm_ += b.norm_, mean_diag_ += b.mean_diag_;
  }
  bool empty() const { return norm_ <= 0; }
  // sum ||W c_c - W_s c_s||^2 / sum ||W_s c_s||^2 = (tr(W C_cc W^T) - 2 tr(W (W_s C_cs^T)^T) +
  // norm) / norm; 0 on an empty part.
  double Error(const Matrix& w, Workspace& ws) const {
    if (empty()) return 0.0;
    MultiplyInto(w, cc_, ws.product);  // C_cc symmetric: W C_cc
    return (Dot(w, ws.product) - 2 * Dot(w, rhs_) + norm_) / norm_;
  }
  // W from W (C_cc + lambda I) = W_s C_cs^T + lambda W_c into `w`, with lambda = ridge *
  // mean(diag C_cc); false when C_cc + lambda I is numerically singular (fewer tokens than
  // context dimensions and a tiny ridge).
  bool Fit(const Matrix& folded, double ridge, Workspace& ws, Matrix& w) const {
    const double lambda = std::max(ridge, kMinRefitRidge) * std::max(mean_diag_, 1e-300);
    ws.factor = cc_;  // copies into the storage it already has
    for (std::int64_t i = 0; i < cc_.rows; ++i) ws.factor(i, i) += lambda;
    w = rhs_;
    for (std::size_t i = 0; i < w.data.size(); ++i) w.data[i] += lambda * folded.data[i];
    return TrySolveRowsPositiveDefinite(ws.factor, w);
  }

 private:
  Matrix cc_, rhs_;
  double norm_ = 0, mean_diag_ = 0;
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ridge=auto: every grid ridge fit on the fit windows and scored on the held-out ones into
// r.tried. Returns the best ridge (-1: none beat W_c) with its solution in `best_w` and its
// held-out error in r.held_out_after.
double ChooseRidge(const PartSystem& fit, const PartSystem& held_out, const Matrix& folded,
                   Workspace& ws, OutputRefit& r, Matrix& best_w) {
  double best = r.held_out_before, ridge = -1;  // keeping the fold's o_proj is a candidate too
  Matrix w;
  for (double candidate : RefitRidgeGrid()) {
    const double error = fit.Fit(folded, candidate, ws, w) ? held_out.Error(w, ws) : kNaN;
    r.tried.emplace_back(candidate, error);  // NaN (skipped) when singular
    if (error < best) best = error, ridge = candidate, std::swap(best_w, w);
  }
  r.held_out_after = best;
  return ridge;
}

}  // namespace

const std::vector<double>& RefitRidgeGrid() {
  static const std::vector<double> grid = {0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  return grid;
}

OutputRefit RefitOutput(const std::vector<double>& source_wo, const std::vector<double>& folded_wo,
                        std::int64_t hidden, const OutputRefitMoments& m, double ridge) {
  const Matrix source = Rows(source_wo, hidden, m.dim), folded = Rows(folded_wo, hidden, m.dim);
  const PartSystem held_out(m.held_out, m.dim, source), fit(m.fit, m.dim, source);
  if (ridge < 0 && held_out.empty()) {
    Fail("--passes",
         "gqa-svd: refit=o with ridge=auto needs at least 2 calibration windows (one is held out "
         "to choose the ridge); give more calibration text, a fixed ridge=R, or refit=none");
  }
  Workspace ws;
  OutputRefit r;
  r.fit_before = fit.Error(folded, ws);
  if (!held_out.empty()) r.held_out_before = held_out.Error(folded, ws);
  Matrix fit_only;  // the chosen ridge's solution on the fit windows alone, when solved
  bool solved = false;
  if (ridge < 0) {
    ridge = ChooseRidge(fit, held_out, folded, ws, r, fit_only);
    solved = ridge >= 0;
    if (!solved) {  // auto kept the fold's o_proj
      r.wo = folded_wo;
      r.fit_after = r.fit_before;
      return r;
    }
  } else if (!held_out.empty()) {
    solved = fit.Fit(folded, ridge, ws, fit_only);
    r.held_out_after = solved ? held_out.Error(fit_only, ws) : kNaN;
  }
  // On every window; a system that is singular there (borderline where the fit windows alone
  // were not) falls back to the fit windows' solution.
  Matrix w;
  if (!PartSystem(fit, held_out).Fit(folded, ridge, ws, w)) {
    if (solved) {
      w = std::move(fit_only);
    } else if (!fit.Fit(folded, ridge, ws, w)) {
      char text[32];
      std::snprintf(text, sizeof text, "%g", ridge);
      Fail("--passes", "gqa-svd: refit=o with ridge=" + std::string(text) +
                           ": the attention context's second moment "
                           "is singular (fewer calibration tokens than its dimensions?); use "
                           "ridge=auto or a larger ridge");
    }
  }
  r.ridge = ridge;
  r.fit_after = fit.Error(w, ws);
  r.wo = std::move(w.data);
  return r;
}

}  // namespace kvfold
