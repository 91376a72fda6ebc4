// The approximate KV-head fold for keys behind a per-head RMSNorm (gqa_fold.h,
// FoldNormalizedKeys; docs/gqa.md, "Qwen3 and Gemma 3").
#include <cmath>
#include <string>
#include <utility>

#include "converter/passes/gqa_fold.h"
#include "formats/error.h"

namespace kvfold {
namespace {

// Rows of every head of `w` ([heads d, cols]) multiplied, or divided, by factor[c] at channel c.
void ScaleHeadRows(std::vector<double>& w, std::int64_t heads, std::int64_t d, std::int64_t cols,
                   const std::vector<double>& factor, bool divide) {
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t c = 0; c < d; ++c) {
      const double f = factor[static_cast<std::size_t>(c)];
      double* row = &w[static_cast<std::size_t>((h * d + c) * cols)];
      for (std::int64_t col = 0; col < cols; ++col) row[col] = divide ? row[col] / f : row[col] * f;
    }
  }
}

void RequireNonZero(const std::vector<double>& weight, std::int64_t d, const char* name) {
  if (static_cast<std::int64_t>(weight.size()) != d)
    throw Error(std::string(name) + " has " + std::to_string(weight.size()) + " weights, not " +
                std::to_string(d));
  for (std::size_t c = 0; c < weight.size(); ++c) {
    if (!(std::abs(weight[c]) > 1e-12)) {
      throw Error(std::string(name) + " weight " + std::to_string(c) +
                  " is 0: the approximate fold divides by it");
    }
  }
}

// The moment S ([KV d, KV d], of the normalised keys z) at channels a, b.
double At(const std::vector<double>& S, std::int64_t kv_dim, std::int64_t a, std::int64_t b) {
  return S[static_cast<std::size_t>(a * kv_dim + b)];
}

// E[Re(y_j)^2] and E[Im(y_j)^2] of group g's folded key pair j, y_j = sum_m conj(encode_m) z_m.
std::pair<double, double> FoldedPairEnergy(const std::vector<double>& S,
                                           const KeyFoldCoefficients& f, std::int64_t g,
                                           std::int64_t t, std::int64_t d, std::int64_t j) {
  const std::int64_t half = d / 2, kv_dim = static_cast<std::int64_t>(f.encode.size()) * d;
  double re = 0, im = 0;
  for (std::int64_t m = 0; m < t; ++m) {
    for (std::int64_t n = 0; n < t; ++n) {
      const std::int64_t xm = (g * t + m) * d + j, ym = xm + half;
      const std::int64_t xn = (g * t + n) * d + j, yn = xn + half;
      const std::complex<double> um =
          f.encode[static_cast<std::size_t>(g * t + m)][static_cast<std::size_t>(j)];
      const std::complex<double> un =
          f.encode[static_cast<std::size_t>(g * t + n)][static_cast<std::size_t>(j)];
      const double am = um.real(), bm = um.imag(), an = un.real(), bn = un.imag();
      re += am * an * At(S, kv_dim, xm, xn) + am * bn * At(S, kv_dim, xm, yn) +
            bm * an * At(S, kv_dim, ym, xn) + bm * bn * At(S, kv_dim, ym, yn);
      im += am * an * At(S, kv_dim, ym, yn) - am * bn * At(S, kv_dim, ym, xn) -
            bm * an * At(S, kv_dim, xm, yn) + bm * bn * At(S, kv_dim, xm, xn);
    }
  }
  return {re, im};
}

// Mean over the group's original heads of E|z_j|^2 at pair j.
double OriginalPairEnergy(const std::vector<double>& S, std::int64_t kv_heads, std::int64_t g,
                          std::int64_t t, std::int64_t d, std::int64_t j) {
  const std::int64_t kv_dim = kv_heads * d;
  double e = 0;
  for (std::int64_t m = 0; m < t; ++m) {
    const std::int64_t x = (g * t + m) * d + j, y = x + d / 2;
    e += At(S, kv_dim, x, x) + At(S, kv_dim, y, y);
  }
  return e / static_cast<double>(t);
}

// A pair's encoder may be divided by any lambda > 0 if its decoder is multiplied by it. Behind
// the norm, each token's key is rescaled by its RMS over all pairs, so each pair of the folded
// key takes the energy the group's heads had there: the norm then rescales little, and a group
// of equal heads (weighted by query energy or not) comes out exact.
void BalancePairs(KeyFoldCoefficients& f, const std::vector<double>& S, std::int64_t t,
                  std::int64_t d) {
  const auto kv_heads = static_cast<std::int64_t>(f.encode.size());
  for (std::int64_t g = 0; g < kv_heads / t; ++g) {
    for (std::int64_t j = 0; j < d / 2; ++j) {
      const auto [re, im] = FoldedPairEnergy(S, f, g, t, d, j);
      const double original = OriginalPairEnergy(S, kv_heads, g, t, d, j);
      if (!(re + im > 0) || !(original > 0)) continue;
      const double lambda = std::sqrt((re + im) / original);
      for (std::int64_t m = g * t; m < (g + 1) * t; ++m) {
        f.encode[static_cast<std::size_t>(m)][static_cast<std::size_t>(j)] /= lambda;
        f.decode[static_cast<std::size_t>(m)][static_cast<std::size_t>(j)] *= lambda;
      }
    }
  }
}

// Each group's eigenvector, at each pair, has a free phase. Behind the norm it matters: a
// rotation of the pair in diag(w) W_K is not one in W_K when the pair's two weights differ, and
// the norm then rescales the token. The phase that makes the group's largest coefficient real
// leaves a group of equal heads exact.
void AlignPhases(KeyFoldCoefficients& f, std::int64_t t) {
  const std::size_t half = f.encode.front().size();
  for (std::size_t first = 0; first < f.encode.size(); first += static_cast<std::size_t>(t)) {
    for (std::size_t j = 0; j < half; ++j) {
      std::size_t top = first;
      for (std::size_t m = first; m < first + static_cast<std::size_t>(t); ++m)
        if (std::abs(f.encode[m][j]) > std::abs(f.encode[top][j])) top = m;
      if (std::abs(f.encode[top][j]) == 0) continue;
      const std::complex<double> turn = std::conj(f.encode[top][j]) / std::abs(f.encode[top][j]);
      for (std::size_t m = first; m < first + static_cast<std::size_t>(t); ++m) {
        f.encode[m][j] *= turn;
        f.decode[m][j] *= turn;
      }
    }
  }
}

// Each KV head's typical pre-norm scale rho_m, ||W_K,m||_F (the input's moment is not
// collected; only the ratio within a group matters). The fold combines normalised keys
// z_m = w * W_m x / r_m(x); applied to the rows it combines w * W_m x, so each head's encoder is
// divided by rho_m: exact for heads that differ by a scale, near where r_m(x) / rho_m is shared.
std::vector<double> PreNormScales(const AttentionProjections& p) {
  const std::int64_t rows = p.head_dim * p.in_cols();
  std::vector<double> rho;
  for (std::int64_t m = 0; m < p.kv_heads; ++m) {
    double s = 0;
    for (std::int64_t i = m * rows; i < (m + 1) * rows; ++i)
      s += p.wk[static_cast<std::size_t>(i)] * p.wk[static_cast<std::size_t>(i)];
    rho.push_back(s > 0 ? std::sqrt(s) : 1.0);
  }
  return rho;
}

}  // namespace

void FoldNormalizedKeys(AttentionProjections& p, std::int64_t new_kv,
                        const std::vector<double>& moment, FoldRecord& record,
                        const std::vector<double>* query_energy, const HeadNorms& norms,
                        int threads) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim, cols = p.in_cols();
  RequireNonZero(norms.query, d, "q_norm");
  RequireNonZero(norms.key, d, "k_norm");
  if (t == 1) {  // nothing merges: the layer stays exact
    record.key_energy_kept.insert(record.key_energy_kept.end(), static_cast<std::size_t>(new_kv),
                                  1.0);
    return;
  }
  const std::vector<double> rho = PreNormScales(p);
  ScaleHeadRows(p.wq, p.heads, d, cols, norms.query, false);
  ScaleHeadRows(p.wk, p.kv_heads, d, cols, norms.key, false);
  KeyFoldCoefficients f = CommutingKeyFold(p, new_kv, moment, record, query_energy);
  AlignPhases(f, t);
  BalancePairs(f, moment, t, d);
  for (std::size_t m = 0; m < rho.size(); ++m)
    for (auto& e : f.encode[m]) e /= rho[m];
  ApplyKeyFold(p, new_kv, f, threads);
  ScaleHeadRows(p.wq, p.heads, d, cols, norms.query, true);
  ScaleHeadRows(p.wk, new_kv, d, cols, norms.key, true);
}

}  // namespace kvfold
