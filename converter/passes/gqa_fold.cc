#include "converter/passes/gqa_fold.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "converter/passes/linalg.h"
#include "converter/passes/parallel_items.h"
#include "formats/error.h"

namespace kvfold {
namespace {

// The [t d, t d] diagonal block of `moment` ([KV d, KV d]) for KV heads first .. first + t - 1.
Matrix GroupBlock(const std::vector<double>& moment, std::int64_t kv_dim,
                  std::int64_t first_channel, std::int64_t size) {
  Matrix m(size, size);
  for (std::int64_t i = 0; i < size; ++i) {
    for (std::int64_t j = 0; j < size; ++j) {
      m(i, j) = moment[static_cast<std::size_t>((first_channel + i) * kv_dim + first_channel + j)];
    }
  }
  return m;
}

// The fraction of the (non-negative part of the) spectrum `values`, descending, in its first
// `count` values: the energy a rank-`count` projection keeps.
double KeptFraction(const std::vector<double>& values, std::int64_t count) {
  double kept = 0, total = 0;
  for (std::size_t k = 0; k < values.size(); ++k) {
    total += std::max(0.0, values[k]);
    if (static_cast<std::int64_t>(k) < count) kept += std::max(0.0, values[k]);
  }
  return total > 0 ? kept / total : 1.0;
}

// Top-`count` eigenvectors of a symmetric matrix as rows [count, n], and the energy they keep.
Matrix TopEigenRows(const Matrix& symmetric, std::int64_t count, double* energy_kept) {
  const SymmetricEigen e = EigenSymmetric(symmetric);
  Matrix rows(count, symmetric.rows);
  for (std::int64_t k = 0; k < count; ++k) {
    for (std::int64_t i = 0; i < symmetric.rows; ++i) rows(k, i) = e.vectors(i, k);
  }
  *energy_kept = KeptFraction(e.values, count);
  return rows;
}

// out rows [n_out, cols] = basis [n_out, n_in] x in rows [n_in, cols] (in = rows first_row..),
// by dgemm: at the Llama-2-7B shape a loop here was 57% of gqa-svd's time.
std::vector<double> CombineRows(const Matrix& basis, const std::vector<double>& w,
                                std::int64_t cols, std::int64_t first_row) {
  std::vector<double> out(static_cast<std::size_t>(basis.rows * cols));
  MultiplyBlocks(basis.rows, cols, basis.cols, basis.data.data(), basis.cols,
                 &w[static_cast<std::size_t>(first_row * cols)], cols, out.data(), cols);
  return out;
}

// Original KV head a query head reads.
std::int64_t KvHeadOf(const AttentionProjections& p, std::int64_t head) {
  return head / (p.heads / p.kv_heads);
}

// Score-error weights per (original KV head, channel): the pre-RoPE query energy of the query
// heads that read the head, at the channel's rotary pair (RoPE mixes the two channels of a
// pair, so both get the pair's mean). All ones without query statistics.
std::vector<double> KeyWeights(const AttentionProjections& p,
                               const std::vector<double>* query_energy) {
  const std::int64_t d = p.head_dim, half = d / 2;
  std::vector<double> w(static_cast<std::size_t>(p.kv_heads * d), query_energy ? 0.0 : 1.0);
  if (!query_energy) return w;
  for (std::int64_t h = 0; h < p.heads; ++h) {
    const std::int64_t m = KvHeadOf(p, h);
    for (std::int64_t j = 0; j < half; ++j) {
      const double pair = (*query_energy)[static_cast<std::size_t>(h * d + j)] +
                          (*query_energy)[static_cast<std::size_t>(h * d + j + half)];
      w[static_cast<std::size_t>(m * d + j)] += pair / 2;
      w[static_cast<std::size_t>(m * d + j + half)] += pair / 2;
    }
  }
  double mean = 0;
  for (double x : w) mean += x / static_cast<double>(w.size());
  for (double& x : w)
    x = std::sqrt(std::max(x, 1e-12 * mean) / std::max(mean, 1e-300));  // s = sqrt(w)
  return w;
}

}  // namespace

void ConjugateQueryPair(const std::vector<double>& wq_in, std::vector<double>& wq_out,
                        std::int64_t head, std::int64_t head_dim, std::int64_t pair,
                        std::int64_t cols, std::complex<double> u) {
  const double a = u.real(), b = u.imag();
  const std::int64_t row = head * head_dim + pair, half = head_dim / 2;
  const double* A = &wq_in[static_cast<std::size_t>(row * cols)];
  const double* B = &wq_in[static_cast<std::size_t>((row + half) * cols)];
  double* A2 = &wq_out[static_cast<std::size_t>(row * cols)];
  double* B2 = &wq_out[static_cast<std::size_t>((row + half) * cols)];
  for (std::int64_t col = 0; col < cols; ++col) {
    const double x = A[col], y = B[col];  // read first: `wq_out` may be `wq_in`
    A2[col] = a * x + b * y;
    B2[col] = a * y - b * x;
  }
}

void DecodeOutputHead(const std::vector<double>& wo_in, std::vector<double>& wo_out,
                      std::int64_t rows, std::int64_t o_cols, std::int64_t head,
                      std::int64_t head_dim, const Matrix& omega, std::int64_t first_col) {
  // dst[r, a] = sum_b src[r, b] omega(a, first_col + b): W_O's head columns times Omega_j^T,
  // from a copy of the columns, so that `wo_out` may be `wo_in`.
  const std::size_t at = static_cast<std::size_t>(head * head_dim);
  std::vector<double> columns(static_cast<std::size_t>(rows * head_dim));
  for (std::int64_t r = 0; r < rows; ++r) {
    std::copy_n(&wo_in[at + static_cast<std::size_t>(r * o_cols)], head_dim,
                &columns[static_cast<std::size_t>(r * head_dim)]);
  }
  MultiplyTransposedBlocks(rows, head_dim, head_dim, columns.data(), head_dim,
                           &omega.data[static_cast<std::size_t>(first_col)], omega.cols,
                           &wo_out[at], o_cols);
}

std::int64_t GroupSize(const AttentionProjections& p, std::int64_t new_kv) {
  if (new_kv <= 0 || p.kv_heads % new_kv != 0) {
    Fail("kv-heads=" + std::to_string(new_kv),
         "must divide the current " + std::to_string(p.kv_heads) + " KV heads (uneven groups)");
  }
  return p.kv_heads / new_kv;
}

void MeanPoolKv(AttentionProjections& p, std::int64_t new_kv) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim, cols = p.in_cols();
  Matrix average(d, t * d);
  for (std::int64_t m = 0; m < t; ++m) {
    for (std::int64_t c = 0; c < d; ++c) average(c, m * d + c) = 1.0 / static_cast<double>(t);
  }
  std::vector<double> wk, wv;
  for (std::int64_t g = 0; g < new_kv; ++g) {
    const auto k = CombineRows(average, p.wk, cols, g * t * d);
    const auto v = CombineRows(average, p.wv, cols, g * t * d);
    wk.insert(wk.end(), k.begin(), k.end());
    wv.insert(wv.end(), v.begin(), v.end());
  }
  p.wk = std::move(wk);
  p.wv = std::move(wv);
  p.kv_heads = new_kv;
}

Matrix OutputGram(const AttentionProjections& p, std::int64_t new_kv, std::int64_t group) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim, o_cols = p.heads * d;
  Matrix g(t * d, t * d);
  for (std::int64_t h = 0; h < p.heads; ++h) {
    const std::int64_t m = KvHeadOf(p, h);
    if (m / t != group) continue;
    Matrix head(p.hidden, d);  // W_O[:, h]
    for (std::int64_t r = 0; r < p.hidden; ++r) {
      std::copy_n(&p.wo[static_cast<std::size_t>(r * o_cols + h * d)], d, &head(r, 0));
    }
    const Matrix gram = Multiply(Transpose(head), head);  // [d, d], dgemm: hidden is thousands
    const std::int64_t block = (m % t) * d;
    for (std::int64_t a = 0; a < d; ++a) {
      for (std::int64_t b = 0; b < d; ++b) g(block + a, block + b) += gram(a, b);
    }
  }
  return g;
}

namespace {

// G^1/2 and G^-1/2 of the output Gram G = `gram`, after a relative ridge.
std::pair<Matrix, Matrix> GramRoots(Matrix gram) {
  const std::int64_t n = gram.rows;
  double trace = 0;
  for (std::int64_t i = 0; i < n; ++i) trace += gram(i, i);
  // A head no query reads, or W_O columns that cancel, leave G singular; a relative ridge keeps
  // G^-1/2 finite without changing a well-conditioned G (1e-9 of its mean eigenvalue).
  for (std::int64_t i = 0; i < n; ++i) gram(i, i) += 1e-9 * std::max(trace / n, 1e-300);
  // G^1/2 = V diag(sqrt l) V^T and G^-1/2 = V diag(1 / sqrt l) V^T, as dgemm products.
  const SymmetricEigen ge = EigenSymmetric(gram);
  Matrix scaled(n, n), inverse_scaled(n, n);
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t k = 0; k < n; ++k) {
      const double root_lambda =
          std::sqrt(std::max(ge.values[static_cast<std::size_t>(k)], 1e-300));
      scaled(i, k) = ge.vectors(i, k) * root_lambda;
      inverse_scaled(i, k) = ge.vectors(i, k) / root_lambda;
    }
  }
  const Matrix vectors_t = Transpose(ge.vectors);
  return {Multiply(scaled, vectors_t), Multiply(inverse_scaled, vectors_t)};
}

// Encoder rows E [d, n] and decoder D^T [d, n] minimising E || A (v - D E v) ||^2 for A^T A =
// `gram` and E[v v^T] = `moment` (FoldValues), with the fraction of weighted energy kept.
std::pair<Matrix, Matrix> WeightedValueBasis(const Matrix& moment, Matrix gram, std::int64_t d,
                                             double* kept) {
  const auto [root, inverse_root] = GramRoots(std::move(gram));
  const Matrix q_rows =
      TopEigenRows(Multiply(Multiply(root, moment), root), d, kept);  // Q^T [d, n]
  return {Multiply(q_rows, root), Multiply(q_rows, inverse_root)};
}

// One group's value fold: the decoder rows Omega [d, t d] for W_O, the group's new W_V rows
// [d, cols], and the energy kept.
struct ValueGroupFold {
  Matrix decoder_rows;
  std::vector<double> wv;
  double kept = 0;
};

ValueGroupFold FoldValueGroup(const AttentionProjections& p, std::int64_t new_kv, std::int64_t g,
                              const std::vector<double>& moment, bool weight_by_output) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim;
  ValueGroupFold fold;
  const Matrix sigma = GroupBlock(moment, p.kv_heads * d, g * t * d, t * d);
  // Without output weighting the basis is orthonormal: the decoder is the encoder.
  Matrix encoder;
  if (weight_by_output) {
    std::tie(encoder, fold.decoder_rows) =
        WeightedValueBasis(sigma, OutputGram(p, new_kv, g), d, &fold.kept);
  } else {
    encoder = TopEigenRows(sigma, d, &fold.kept);
    fold.decoder_rows = encoder;
  }
  fold.wv = CombineRows(encoder, p.wv, p.in_cols(), g * t * d);
  return fold;
}

}  // namespace

void FoldValues(AttentionProjections& p, std::int64_t new_kv, const std::vector<double>& moment,
                FoldRecord& record, bool weight_by_output, int threads) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim;
  const std::int64_t out_rows = p.hidden, o_cols = p.heads * d;
  std::vector<ValueGroupFold> groups(static_cast<std::size_t>(new_kv));
  ParallelItems(new_kv, threads, [&](std::int64_t g) {
    groups[static_cast<std::size_t>(g)] = FoldValueGroup(p, new_kv, g, moment, weight_by_output);
  });
  std::vector<double> wv;
  wv.reserve(static_cast<std::size_t>(new_kv * d * p.in_cols()));
  for (const ValueGroupFold& group : groups) {
    record.value_energy_kept.push_back(group.kept);
    wv.insert(wv.end(), group.wv.begin(), group.wv.end());
  }
  // W_O[:, head] <- W_O[:, head] Omega_j^T, with j the head's original KV head inside its group,
  // in place (a copy of W_O is a fresh mapping, faulted page by page, on every layer); each head
  // writes only its own columns.
  ParallelItems(p.heads, threads, [&](std::int64_t h) {
    const std::int64_t m = KvHeadOf(p, h), g = m / t, j = m % t;
    DecodeOutputHead(p.wo, p.wo, out_rows, o_cols, h, d,
                     groups[static_cast<std::size_t>(g)].decoder_rows, j * d);
  });
  p.wv = std::move(wv);
  // kv_heads changes with the keys: FoldValues and a key fold are applied as a pair.
}

std::vector<double> ValueEnergyKept(const AttentionProjections& p, std::int64_t new_kv,
                                    const std::vector<double>& moment, bool weight_by_output) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim;
  std::vector<double> kept;
  for (std::int64_t g = 0; g < new_kv; ++g) {
    const Matrix sigma = GroupBlock(moment, p.kv_heads * d, g * t * d, t * d);
    if (!weight_by_output) {
      kept.push_back(KeptFraction(EigenvaluesSymmetric(sigma), d));
      continue;
    }
    const Matrix root = GramRoots(OutputGram(p, new_kv, g)).first;
    kept.push_back(KeptFraction(EigenvaluesSymmetric(Multiply(Multiply(root, sigma), root)), d));
  }
  return kept;
}

KeyFoldCoefficients CommutingKeyFold(const AttentionProjections& p, std::int64_t new_kv,
                                     const std::vector<double>& moment, FoldRecord& record,
                                     const std::vector<double>* query_energy) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim, half = d / 2;
  const std::int64_t kv_dim = p.kv_heads * d;
  auto S = [&](std::int64_t a, std::int64_t b) {
    return moment[static_cast<std::size_t>(a * kv_dim + b)];
  };
  const std::vector<double> scale = KeyWeights(p, query_energy);  // s per (head, channel)
  KeyFoldCoefficients f;
  f.encode.assign(static_cast<std::size_t>(p.kv_heads), std::vector<Complex>(half));
  f.decode = f.encode;
  for (std::int64_t g = 0; g < new_kv; ++g) {
    double kept = 0, total = 0;
    for (std::int64_t j = 0; j < half; ++j) {
      ComplexMatrix c(t, t);  // E[z_m conj(z_n)] with z = x_j + i x_{j + d/2}
      for (std::int64_t m = 0; m < t; ++m) {
        for (std::int64_t n = 0; n < t; ++n) {
          const std::int64_t xm = (g * t + m) * d + j, ym = xm + half;
          const std::int64_t xn = (g * t + n) * d + j, yn = xn + half;
          const double sm = scale[static_cast<std::size_t>(xm)],
                       sn = scale[static_cast<std::size_t>(xn)];
          c(m, n) = sm * sn * Complex(S(xm, xn) + S(ym, yn), S(ym, xn) - S(xm, yn));
        }
      }
      const HermitianEigen e = EigenHermitian(c);
      for (std::int64_t m = 0; m < t; ++m) {
        total += std::max(0.0, e.values[static_cast<std::size_t>(m)]);
        const auto head = static_cast<std::size_t>(g * t + m);
        const double sm = scale[static_cast<std::size_t>((g * t + m) * d + j)];
        f.encode[head][static_cast<std::size_t>(j)] = e.vectors(m, 0) * sm;
        f.decode[head][static_cast<std::size_t>(j)] = e.vectors(m, 0) / sm;
      }
      kept += std::max(0.0, e.values[0]);
    }
    record.key_energy_kept.push_back(total > 0 ? kept / total : 1.0);
  }
  return f;
}

void ApplyKeyFold(AttentionProjections& p, std::int64_t new_kv, const KeyFoldCoefficients& f,
                  int threads) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim, half = d / 2, cols = p.in_cols();
  std::vector<double> wk(static_cast<std::size_t>(new_kv * d * cols), 0.0);
  // Each group writes only its own rows of the new W_K.
  ParallelItems(new_kv, threads, [&](std::int64_t g) {
    for (std::int64_t j = 0; j < half; ++j) {
      // New key pair j of group g: sum_m conj(encode_m) z_m.
      for (std::int64_t m = 0; m < t; ++m) {
        const Complex um =
            f.encode[static_cast<std::size_t>(g * t + m)][static_cast<std::size_t>(j)];
        const double a = um.real(), b = um.imag();
        const double* x = &p.wk[static_cast<std::size_t>(((g * t + m) * d + j) * cols)];
        const double* y = &p.wk[static_cast<std::size_t>(((g * t + m) * d + j + half) * cols)];
        double* re = &wk[static_cast<std::size_t>((g * d + j) * cols)];
        double* im = &wk[static_cast<std::size_t>((g * d + j + half) * cols)];
        for (std::int64_t col = 0; col < cols; ++col) {
          re[col] += a * x[col] + b * y[col];
          im[col] += a * y[col] - b * x[col];
        }
      }
    }
  });
  // Each query head multiplies its pair j by conj(decode_m) of the KV head it read, in place, in
  // its own rows.
  ParallelItems(p.heads, threads, [&](std::int64_t h) {
    const auto m = static_cast<std::size_t>(KvHeadOf(p, h));
    for (std::int64_t j = 0; j < half; ++j)
      ConjugateQueryPair(p.wq, p.wq, h, d, j, cols, f.decode[m][static_cast<std::size_t>(j)]);
  });
  p.wk = std::move(wk);
  p.kv_heads = new_kv;
}

void FoldKeysCommute(AttentionProjections& p, std::int64_t new_kv,
                     const std::vector<double>& moment, FoldRecord& record,
                     const std::vector<double>* query_energy, int threads) {
  ApplyKeyFold(p, new_kv, CommutingKeyFold(p, new_kv, moment, record, query_energy), threads);
}

KeyReconstruction ReconstructKeys(const AttentionProjections& p, std::int64_t new_kv,
                                  const std::vector<double>& moment, FoldRecord& record,
                                  const std::vector<double>* query_energy) {
  const std::int64_t t = GroupSize(p, new_kv), d = p.head_dim, kv_dim = p.kv_heads * d;
  const std::vector<double> scale = KeyWeights(p, query_energy);
  KeyReconstruction r;
  r.k_cache_proj.reserve(static_cast<std::size_t>(new_kv * d * t * d));
  r.q_cache_proj.resize(static_cast<std::size_t>(p.heads * d * d));
  std::vector<Matrix> psis;
  for (std::int64_t g = 0; g < new_kv; ++g) {
    double kept = 0;
    // Weighted PCA: Psi' from S C S; encode with Psi' S, decode with S^-1 Psi'^T.
    Matrix block = GroupBlock(moment, kv_dim, g * t * d, t * d);
    for (std::int64_t a = 0; a < t * d; ++a) {
      for (std::int64_t b = 0; b < t * d; ++b) {
        block(a, b) *= scale[static_cast<std::size_t>(g * t * d + a)] *
                       scale[static_cast<std::size_t>(g * t * d + b)];
      }
    }
    psis.push_back(TopEigenRows(block, d, &kept));
    record.key_energy_kept.push_back(kept);
    for (std::int64_t a = 0; a < d; ++a) {
      for (std::int64_t b = 0; b < t * d; ++b) {
        r.k_cache_proj.push_back(psis.back()(a, b) *
                                 scale[static_cast<std::size_t>(g * t * d + b)]);
      }
    }
  }
  for (std::int64_t h = 0; h < p.heads; ++h) {
    const std::int64_t m = KvHeadOf(p, h), g = m / t, j = m % t;
    for (std::int64_t a = 0; a < d; ++a) {
      for (std::int64_t b = 0; b < d; ++b) {
        r.q_cache_proj[static_cast<std::size_t>((h * d + a) * d + b)] =
            psis[static_cast<std::size_t>(g)](a, j * d + b) /
            scale[static_cast<std::size_t>(m * d + b)];
      }
    }
  }
  return r;
}

}  // namespace kvfold
