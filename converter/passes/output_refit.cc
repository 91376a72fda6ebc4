#include "converter/passes/output_refit.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <utility>

#include "converter/passes/linalg.h"
#include "formats/error.h"

namespace kvfold {
namespace {

// sum a_ij b_ij = tr(a^T b), for a and b of one shape given as their data.
double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
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

// The Cholesky factor's storage, reused from one solve to the next: at a 7B layer it is 128 MiB,
// and fresh memory for every solve was most of the refit's page faults (docs/results.md, "The
// refit's sums and solve").
struct Workspace {
  Matrix factor;
};

// One part's sums turned into what the refit needs from them, once, for W in o_proj's layout:
// C_cc, the normal equations' right side W_s C_cs^T, and the output energy sum ||W_s c_s||^2 =
// tr(W_s C_ss W_s^T) = sum C_ss o (W_s^T W_s) that errors are relative to (`source_gram` is
// W_s^T W_s). A part without tokens holds nothing.
class PartSystem {
 public:
  PartSystem(const OutputRefitMoments::Part& p, std::int64_t dim, const Matrix& source,
             const Matrix& source_gram) {
    if (p.tokens == 0) return;
    cc_ = Rows(p.cc, dim, dim);
    rhs_ = MultiplySquare(source, p.cs, /*transpose=*/true);
    norm_ = Dot(p.ss, source_gram.data);
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
  // norm) / norm with tr(W C_cc W^T) = sum C_cc o `gram` (W^T W); 0 on an empty part.
  double Error(const Matrix& w, const Matrix& gram) const {
    if (empty()) return 0.0;
    return (Dot(cc_.data, gram.data) - 2 * Dot(w.data, rhs_.data) + norm_) / norm_;
  }
  // lambda = ridge * mean(diag C_cc), the ridge's scale for this part.
  double Lambda(double ridge) const {
    return std::max(ridge, kMinRefitRidge) * std::max(mean_diag_, 1e-300);
  }
  // W from W (C_cc + lambda I) = W_s C_cs^T + lambda W_c into `w`; false when C_cc + lambda I is
  // numerically singular (fewer tokens than context dimensions and a tiny ridge).
  bool Fit(const Matrix& folded, double ridge, Workspace& ws, Matrix& w) const {
    const double lambda = Lambda(ridge);
    ws.factor = cc_;  // copies into the storage it already has
    for (std::int64_t i = 0; i < cc_.rows; ++i) ws.factor(i, i) += lambda;
    w = rhs_;
    for (std::size_t i = 0; i < w.data.size(); ++i) w.data[i] += lambda * folded.data[i];
    return TrySolveRowsPositiveDefinite(ws.factor, w);
  }
  const Matrix& cc() const { return cc_; }
  const Matrix& rhs() const { return rhs_; }
  double norm() const { return norm_; }

 private:
  Matrix cc_, rhs_;
  double norm_ = 0, mean_diag_ = 0;
};

// The fit windows' system and the held-out windows'.
std::pair<PartSystem, PartSystem> Parts(const OutputRefitMoments& m, const Matrix& source) {
  const Matrix source_gram = GramOfColumns(source);
  return {PartSystem(m.fit, m.dim, source, source_gram),
          PartSystem(m.held_out, m.dim, source, source_gram)};
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One ridge of the path: lambda and D = 1 / (e + lambda), or singular.
struct RidgePoint {
  double lambda = 0;
  std::vector<double> d;
  bool singular = false;
  double quadratic = 0, cross = 0;  // tr(W C_h W^T), tr(W R_h^T)
};

// C_cc + lambda I is numerically singular (what makes its Cholesky factorisation fail) when its
// smallest eigenvalue is at most dim * eps * its largest.
RidgePoint MakeRidgePoint(const std::vector<double>& e, double lambda) {
  RidgePoint p;
  p.lambda = lambda;
  double largest = 0;
  for (double x : e) largest = std::max(largest, std::abs(x + lambda));
  const double floor =
      static_cast<double>(e.size()) * std::numeric_limits<double>::epsilon() * largest;
  p.d.resize(e.size());
  for (std::size_t i = 0; i < e.size(); ++i) {
    if (!(e[i] + lambda > floor)) p.singular = true;
    p.d[i] = 1.0 / (e[i] + lambda);
  }
  return p;
}

// The fit windows' solution at lambda, in the eigenbasis of their C_cc = V diag(e) V^T: with
// A = R V and B = W_c V (R the fit's right side W_s C_cs^T), W = (A + lambda B) D V^T, and on the
// held-out sums (C_h, R_h)
//   tr(W C_h W^T) = sum_ij D_i D_j h_ij [A^T A + lambda (A^T B + B^T A) + lambda^2 B^T B]_ij,
//   tr(W R_h^T)   = sum_i D_i (A + lambda B)_:i . S_:i,
// with h = V^T C_h V and S = R_h V. The products are formed in row blocks of their upper
// triangles and reduced at once for every ridge, so none is held whole: besides V, A^T and B^T,
// only kBlock rows of each (docs/gqa.md, "Cost" of the o_proj refit).
class HeldOutPath {
 public:
  HeldOutPath(const PartSystem& fit, const PartSystem& held_out, const Matrix& folded)
      : eig_(EigenRowsSymmetric(fit.cc())),  // rows: V^T
        at_(MultiplyTransposedRight(eig_.rows, fit.rhs())),
        bt_(MultiplyTransposedRight(eig_.rows, folded)),
        held_out_(held_out) {}
  const std::vector<double>& eigenvalues() const { return eig_.values; }
  // Every point's quadratic and cross terms, summed block by block in a fixed order.
  void Reduce(std::vector<RidgePoint>& points) const;

 private:
  static constexpr std::int64_t kBlock = 256;
  // Rows i0.. of h, A^T A, A^T B, B^T A, B^T B from column i0 on, and of S^T; reused by every
  // block.
  struct Block {
    std::int64_t i0 = 0, rows = 0, cols = 0;
    std::vector<double> t, h, aa, ab, ba, bb, st;
  };
  void Form(Block& b) const;
  void Accumulate(const Block& b, std::vector<RidgePoint>& points) const;

  SymmetricEigenRows eig_;
  Matrix at_, bt_;  // A^T = V^T R^T and B^T = V^T W_c^T, [dim, hidden]
  const PartSystem& held_out_;
};

void HeldOutPath::Reduce(std::vector<RidgePoint>& points) const {
  const std::int64_t n = at_.rows, hidden = at_.cols;
  Block b;
  for (auto* m : {&b.t, &b.h, &b.aa, &b.ab, &b.ba, &b.bb})
    m->resize(static_cast<std::size_t>(std::min(kBlock, n) * n));
  b.st.resize(static_cast<std::size_t>(std::min(kBlock, n) * hidden));
  for (b.i0 = 0; b.i0 < n; b.i0 += kBlock) {
    b.rows = std::min(kBlock, n - b.i0), b.cols = n - b.i0;
    Form(b);
    Accumulate(b, points);
  }
}

void HeldOutPath::Form(Block& b) const {
  const std::int64_t n = at_.rows, hidden = at_.cols;
  const double* v = &eig_.rows.data[static_cast<std::size_t>(b.i0 * n)];  // V^T's rows i0..
  MultiplyBlocks(b.rows, n, n, v, n, held_out_.cc().data.data(), n, b.t.data(), n);
  MultiplyTransposedBlocks(b.rows, b.cols, n, b.t.data(), n, v, n, b.h.data(), b.cols);
  const auto from = [&](const Matrix& m) {
    return &m.data[static_cast<std::size_t>(b.i0 * hidden)];
  };
  const Matrix* left[] = {&at_, &at_, &bt_, &bt_};
  const Matrix* right[] = {&at_, &bt_, &at_, &bt_};
  std::vector<double>* out[] = {&b.aa, &b.ab, &b.ba, &b.bb};
  for (int k = 0; k < 4; ++k) {
    MultiplyTransposedBlocks(b.rows, b.cols, hidden, from(*left[k]), hidden, from(*right[k]),
                             hidden, out[k]->data(), b.cols);
  }
  MultiplyTransposedBlocks(b.rows, hidden, n, v, n, held_out_.rhs().data.data(), n, b.st.data(),
                           hidden);
}

void HeldOutPath::Accumulate(const Block& b, std::vector<RidgePoint>& points) const {
  const std::int64_t hidden = at_.cols;
  for (std::int64_t r = 0; r < b.rows; ++r) {
    const std::int64_t i = b.i0 + r;
    const std::size_t ii = static_cast<std::size_t>(i);
    double a_dot = 0, b_dot = 0;
    for (std::int64_t k = 0; k < hidden; ++k) {
      const double s = b.st[static_cast<std::size_t>(r * hidden + k)];
      a_dot += at_(i, k) * s, b_dot += bt_(i, k) * s;
    }
    for (RidgePoint& p : points) p.cross += p.d[ii] * (a_dot + p.lambda * b_dot);
    // (i, j) and (j, i) at once for j > i; j < i was counted in row j
    for (std::int64_t c = r; c < b.cols; ++c) {
      const std::size_t at = static_cast<std::size_t>(r * b.cols + c);
      const double w = (c == r ? 1.0 : 2.0) * b.h[at];
      const double q0 = w * b.aa[at], q1 = w * (b.ab[at] + b.ba[at]), q2 = w * b.bb[at];
      for (RidgePoint& p : points) {
        const double dd = p.d[ii] * p.d[static_cast<std::size_t>(b.i0 + c)];
        p.quadratic += dd * (q0 + p.lambda * (q1 + p.lambda * q2));
      }
    }
  }
}

double ChooseRidge(const PartSystem& fit, const PartSystem& held_out, const Matrix& folded,
                   OutputRefit& r) {
  std::vector<RidgePoint> points;
  {
    const HeldOutPath path(fit, held_out, folded);
    for (double candidate : RefitRidgeGrid())
      points.push_back(MakeRidgePoint(path.eigenvalues(), fit.Lambda(candidate)));
    path.Reduce(points);
  }
  double best = r.held_out_before, ridge = -1;  // keeping the fold's o_proj is a candidate too
  for (std::size_t k = 0; k < points.size(); ++k) {
    const RidgePoint& p = points[k];
    const double error =
        p.singular ? kNaN : (p.quadratic - 2 * p.cross + held_out.norm()) / held_out.norm();
    r.tried.emplace_back(RefitRidgeGrid()[k], error);  // NaN (skipped) when singular
    if (error < best) best = error, ridge = RefitRidgeGrid()[k];
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
  const auto [fit, held_out] = Parts(m, source);
  if (ridge < 0 && held_out.empty()) {
    Fail("--passes",
         "gqa-svd: refit=o with ridge=auto needs at least 2 calibration windows (one is held out "
         "to choose the ridge); give more calibration text, a fixed ridge=R, or refit=none");
  }
  OutputRefit r;
  {
    const Matrix folded_gram = GramOfColumns(folded);
    r.fit_before = fit.Error(folded, folded_gram);
    if (!held_out.empty()) r.held_out_before = held_out.Error(folded, folded_gram);
  }
  Workspace ws;
  Matrix fit_only;  // a fixed ridge's solution on the fit windows alone, when solved
  bool solved = false;
  if (ridge < 0) {
    ridge = ChooseRidge(fit, held_out, folded, r);
    if (ridge < 0) {  // auto kept the fold's o_proj
      r.wo = folded_wo;
      r.fit_after = r.fit_before;
      return r;
    }
  } else if (!held_out.empty()) {
    solved = fit.Fit(folded, ridge, ws, fit_only);
    r.held_out_after = solved ? held_out.Error(fit_only, GramOfColumns(fit_only)) : kNaN;
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
  r.fit_after = fit.Error(w, GramOfColumns(w));
  r.wo = std::move(w.data);
  return r;
}

}  // namespace kvfold
