#include "converter/passes/cross_layer_fold.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "converter/passes/linalg.h"
#include "formats/error.h"

namespace kvfold {
namespace {

// Ridges relative to the source moment's mean diagonal, tried in turn until one factors. The
// first keeps the regression solvable when an input channel is (nearly) constant, and is small
// enough that a reader predicting itself is reproduced to ~1e-7 relative. The larger ones are
// for a moment that rounding left indefinite: with fewer calibration tokens than input channels
// its null space is rounding noise, which can come out negative (mlkv<kv-layers=11> on the
// TinyLlama-1.1B shape at 1024 and 2560 tokens failed there with 1e-9 alone).
constexpr double kRidges[] = {1e-9, 1e-7, 1e-5, 1e-3};

// The top-left [w, w] block of a row-major [full, full] moment: without q/k/v biases the
// constant input channel has nowhere to go, so the fit leaves it out.
Matrix Leading(const std::vector<double>& moment, std::int64_t w) {
  const std::int64_t full =
      static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(moment.size()))));
  if (full * full != static_cast<std::int64_t>(moment.size()) || full < w) {
    Fail("calibration", "internal: input moment has the wrong size");
  }
  Matrix m(w, w);
  for (std::int64_t i = 0; i < w; ++i) {
    for (std::int64_t j = 0; j < w; ++j) m(i, j) = moment[static_cast<std::size_t>(i * full + j)];
  }
  return m;
}

// Rows [rows, cols] of a row-major weight as a Matrix.
Matrix AsMatrix(const std::vector<double>& rows_data, std::int64_t cols) {
  Matrix m(static_cast<std::int64_t>(rows_data.size()) / cols, cols);
  m.data = rows_data;
  return m;
}

// r^T S r for every row r of `w` [rows, W].
std::vector<double> RowEnergies(const Matrix& w, const Matrix& s) {
  const Matrix sw = Multiply(w, s);  // S symmetric: row i of W S is (S r_i)^T
  std::vector<double> e(static_cast<std::size_t>(w.rows), 0.0);
  for (std::int64_t i = 0; i < w.rows; ++i) {
    for (std::int64_t k = 0; k < w.cols; ++k) e[static_cast<std::size_t>(i)] += sw(i, k) * w(i, k);
  }
  return e;
}

std::vector<double> AverageRows(const std::vector<const AttentionProjections*>& readers,
                                std::size_t source, MeanRule rule,
                                std::vector<double> AttentionProjections::*field) {
  std::vector<double> out = readers[source]->*field;
  if (rule == MeanRule::kUniform) {
    std::fill(out.begin(), out.end(), 0.0);
    for (const AttentionProjections* r : readers) {
      for (std::size_t i = 0; i < out.size(); ++i)
        out[i] += (r->*field)[i] / static_cast<double>(readers.size());
    }
    return out;
  }
  for (std::size_t k = 0; k < readers.size(); ++k) {  // later layers, in order, into the source
    if (k == source) continue;
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = 0.5 * (out[i] + (readers[k]->*field)[i]);
  }
  return out;
}

// S_ss^-1 rhs with the first of kRidges under which S_ss factors; `record.ridge` says which.
Matrix SolveSourceMoment(const Matrix& s_source, const Matrix& rhs, SharingRecord& record) {
  for (double ridge : kRidges) {
    if (std::optional<Matrix> x = TrySolvePositiveDefinite(s_source, rhs, ridge)) {
      record.ridge = ridge;
      return std::move(*x);
    }
  }
  Fail("cross-layer fit",
       "the source layer's input moment is not positive definite even with a ridge of 1e-3 of "
       "its mean diagonal (a degenerate input?); give more --calib-tokens, or use init=mean");
}

}  // namespace

SharedKv MeanSharedKv(const std::vector<const AttentionProjections*>& readers,
                      std::size_t source_index, MeanRule rule) {
  return {AverageRows(readers, source_index, rule, &AttentionProjections::wk),
          AverageRows(readers, source_index, rule, &AttentionProjections::wv)};
}

SharedKv FitSharedKv(const std::vector<AttentionProjections*>& readers,
                     const SharingMoments& moments, SharingRecord& record) {
  const std::size_t n = readers.size();
  if (n == 0 || moments.cross.size() != n || moments.reader.size() != n) {
    Fail("cross-layer fit", "internal: moments and readers disagree");
  }
  const AttentionProjections& first = *readers.front();
  const std::int64_t W = first.in_cols(), KV = first.kv_heads, H = first.heads, d = first.head_dim;
  const std::int64_t half = d / 2, kvd = KV * d, group = H / KV;
  const Matrix s_source = Leading(moments.source, W);

  // Ordinary least squares of every reader's keys and values on the source's input, all at
  // once: G = S_ss^-1 [S_sr W_K,r^T | S_sr W_V,r^T] over readers r ([W, 2 n KV d]).
  Matrix rhs(W, static_cast<std::int64_t>(2 * n) * kvd);
  for (std::size_t r = 0; r < n; ++r) {
    const Matrix cross = Leading(moments.cross[r], W);
    const Matrix k = Multiply(cross, Transpose(AsMatrix(readers[r]->wk, W)));
    const Matrix v = Multiply(cross, Transpose(AsMatrix(readers[r]->wv, W)));
    for (std::int64_t i = 0; i < W; ++i) {
      for (std::int64_t c = 0; c < kvd; ++c) {
        rhs(i, static_cast<std::int64_t>(2 * r) * kvd + c) = k(i, c);
        rhs(i, static_cast<std::int64_t>(2 * r + 1) * kvd + c) = v(i, c);
      }
    }
  }
  const Matrix ols = SolveSourceMoment(s_source, rhs, record);
  auto key_col = [&](std::size_t r, std::int64_t channel) {
    return static_cast<std::int64_t>(2 * r) * kvd + channel;
  };
  auto value_col = [&](std::size_t r, std::int64_t channel) {
    return static_cast<std::int64_t>(2 * r + 1) * kvd + channel;
  };

  // Each reader's own energies: keys and values per channel, queries per channel (the weights).
  std::vector<std::vector<double>> key_energy(n), value_energy(n), query_energy(n);
  for (std::size_t r = 0; r < n; ++r) {
    const Matrix s_reader = Leading(moments.reader[r], W);
    key_energy[r] = RowEnergies(AsMatrix(readers[r]->wk, W), s_reader);
    value_energy[r] = RowEnergies(AsMatrix(readers[r]->wv, W), s_reader);
    query_energy[r] = RowEnergies(AsMatrix(readers[r]->wq, W), s_reader);
  }

  SharedKv out;
  out.wk.assign(static_cast<std::size_t>(kvd * W), 0.0);
  out.wv.assign(static_cast<std::size_t>(kvd * W), 0.0);
  // Each reader's W_Q pairs and W_O head columns are rewritten in place, each once (a copy per
  // reader would be n fresh W_Q and W_O).
  for (std::int64_t g = 0; g < KV; ++g) {
    // Keys, per rotary pair j: y_r = s_r z_r with z_r = x_j + i x_{j + d/2} of reader r's head g
    // and s_r the query energy reading it. Rank 1 over readers: y_r ~ u_r (gamma^T ĥ_s).
    double key_kept = 0, key_total = 0;
    for (std::int64_t j = 0; j < half; ++j) {
      const std::int64_t re = g * d + j, im = re + half;
      std::vector<double> weight(n, 0.0);
      double mean = 0;
      for (std::size_t r = 0; r < n; ++r) {
        for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
          weight[r] += query_energy[r][static_cast<std::size_t>(h * d + j)] +
                       query_energy[r][static_cast<std::size_t>(h * d + j + half)];
        }
        mean += weight[r] / static_cast<double>(n);
      }
      for (double& w : weight) w = mean > 0 ? std::sqrt(std::max(w, 1e-12 * mean) / mean) : 1.0;
      ComplexMatrix m(static_cast<std::int64_t>(n),
                      static_cast<std::int64_t>(n));  // E[ŷ ŷ^H] = G^T conj(R)
      for (std::size_t a = 0; a < n; ++a) {
        for (std::size_t b = 0; b < n; ++b) {
          Complex sum = 0;
          for (std::int64_t k = 0; k < W; ++k) {
            const Complex ga(ols(k, key_col(a, re)), ols(k, key_col(a, im)));
            const Complex rb(rhs(k, key_col(b, re)), rhs(k, key_col(b, im)));
            sum += ga * std::conj(rb);
          }
          m(static_cast<std::int64_t>(a), static_cast<std::int64_t>(b)) =
              weight[a] * weight[b] * sum;
        }
      }
      for (std::size_t a = 0; a < n; ++a) {  // exact Hermitian symmetry before LAPACK
        for (std::size_t b = a; b < n; ++b) {
          const auto ia = static_cast<std::int64_t>(a), ib = static_cast<std::int64_t>(b);
          const Complex avg = 0.5 * (m(ia, ib) + std::conj(m(ib, ia)));
          m(ia, ib) = avg;
          m(ib, ia) = std::conj(avg);
        }
      }
      const HermitianEigen e = EigenHermitian(m);
      key_kept += std::max(0.0, e.values[0]);
      for (std::size_t r = 0; r < n; ++r) {
        key_total += weight[r] * weight[r] *
                     (key_energy[r][static_cast<std::size_t>(re)] +
                      key_energy[r][static_cast<std::size_t>(im)]);
      }
      // Source key pair: gamma = sum_r s_r G_r conj(u_r); channel j = Re, channel j + d/2 = Im.
      for (std::int64_t k = 0; k < W; ++k) {
        Complex gamma = 0;
        for (std::size_t r = 0; r < n; ++r) {
          gamma += weight[r] * Complex(ols(k, key_col(r, re)), ols(k, key_col(r, im))) *
                   std::conj(e.vectors(static_cast<std::int64_t>(r), 0));
        }
        out.wk[static_cast<std::size_t>(re * W + k)] = gamma.real();
        out.wk[static_cast<std::size_t>(im * W + k)] = gamma.imag();
      }
      // Reader r decodes z_r ~ (u_r / s_r) z': its queries of head g multiply pair j by the
      // conjugate.
      for (std::size_t r = 0; r < n; ++r) {
        const Complex u = e.vectors(static_cast<std::int64_t>(r), 0) / weight[r];
        for (std::int64_t h = g * group; h < (g + 1) * group; ++h)
          ConjugateQueryPair(readers[r]->wq, readers[r]->wq, h, d, j, W, u);
      }
    }
    record.key_energy_kept.push_back(key_total > 0 ? key_kept / key_total : 1.0);

    // Values: y = [v_r of head g]_r (n d), rank d: the top-d eigenvectors Omega of E[ŷ ŷ^T] = G^T
    // R.
    const std::int64_t nd = static_cast<std::int64_t>(n) * d;
    Matrix g_values(W, nd), r_values(W, nd);
    for (std::int64_t k = 0; k < W; ++k) {
      for (std::int64_t b = 0; b < nd; ++b) {
        const std::size_t r = static_cast<std::size_t>(b / d);
        g_values(k, b) = ols(k, value_col(r, g * d + b % d));
        r_values(k, b) = rhs(k, value_col(r, g * d + b % d));
      }
    }
    Matrix c = Multiply(Transpose(g_values), r_values);
    for (std::int64_t a = 0; a < nd; ++a) {
      for (std::int64_t b = a + 1; b < nd; ++b) c(a, b) = c(b, a) = 0.5 * (c(a, b) + c(b, a));
    }
    const SymmetricEigen e = EigenSymmetric(c);
    double value_kept = 0, value_total = 0;
    for (std::int64_t a = 0; a < d; ++a)
      value_kept += std::max(0.0, e.values[static_cast<std::size_t>(a)]);
    for (std::size_t r = 0; r < n; ++r) {
      for (std::int64_t a = 0; a < d; ++a)
        value_total += value_energy[r][static_cast<std::size_t>(g * d + a)];
    }
    record.value_energy_kept.push_back(value_total > 0 ? value_kept / value_total : 1.0);
    // Source value head g: Omega G^T. Reader r: W_O[:, h] <- W_O[:, h] Omega_r^T for its heads h of
    // g.
    Matrix omega(d, nd);
    for (std::int64_t a = 0; a < d; ++a) {
      for (std::int64_t b = 0; b < nd; ++b) omega(a, b) = e.vectors(b, a);
    }
    const Matrix source_values = Multiply(omega, Transpose(g_values));  // [d, W]
    std::copy(source_values.data.begin(), source_values.data.end(), out.wv.begin() + g * d * W);
    for (std::size_t r = 0; r < n; ++r) {
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
        DecodeOutputHead(readers[r]->wo, readers[r]->wo, first.hidden, H * d, h, d, omega,
                         static_cast<std::int64_t>(r) * d);
      }
    }
  }
  return out;
}

}  // namespace kvfold
