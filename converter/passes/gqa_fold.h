// The math of KV-head compression for one layer (../shared/docs/METHODS.md, "Grouping KV heads"):
// mean-pooling, the exact value fold, the RoPE-commuting key fold and the reconstruct-mode key
// bases. Pure functions over float matrices, so tests can check them without a model.
#pragma once

#include <complex>
#include <cstdint>
#include <vector>

#include "converter/passes/linalg.h"

namespace kvfold {

// One layer's attention projections in HF [out, in] layout, each with its bias (if any) stored
// as one extra trailing column, so a row transform moves weight and bias together.
struct AttentionProjections {
  std::int64_t heads = 0, kv_heads = 0, head_dim = 0, hidden = 0;
  bool has_bias = false;   // q/k/v biases present (Qwen2)
  std::vector<double> wq;  // [H d, hidden + bias]
  std::vector<double> wk;  // [KV d, hidden + bias]
  std::vector<double> wv;  // [KV d, hidden + bias]
  std::vector<double> wo;  // [hidden, H d]
  std::int64_t in_cols() const { return hidden + (has_bias ? 1 : 0); }
};

// Per-group record of what a fold kept (fraction of calibration energy, 1 = lossless).
struct FoldRecord {
  std::vector<double> value_energy_kept;
  std::vector<double> key_energy_kept;
};

// Reconstruct-mode key tensors for the runtime: k_cache = Psi_g [d, t d] per new KV head,
// q_cache = Psi_j [d, d] per query head (the block of its original KV head).
struct KeyReconstruction {
  std::vector<double> k_cache_proj;  // [KV', d, t d]
  std::vector<double> q_cache_proj;  // [H, d, d]
};

// Fold primitives shared by the KV-head and cross-layer folds.
// Query head `head`'s rotary pair j (rows head*d + j and head*d + j + d/2 of `wq_in`, [H d, cols])
// multiplied by conj(u), written to the same rows of `wq_out`: scores then read the key pair
// decoded as u * k'. `wq_out` may be `wq_in`.
void ConjugateQueryPair(const std::vector<double>& wq_in, std::vector<double>& wq_out,
                        std::int64_t head, std::int64_t head_dim, std::int64_t pair,
                        std::int64_t cols, std::complex<double> u);
// W_O[:, head] <- W_O[:, head] Omega^T for Omega = columns first_col .. first_col + d - 1 of
// `omega` ([d, ...]): the value head it read is decoded as Omega^T v'. `wo_in`/`wo_out` are
// [rows, o_cols]; `wo_out` may be `wo_in`.
void DecodeOutputHead(const std::vector<double>& wo_in, std::vector<double>& wo_out,
                      std::int64_t rows, std::int64_t o_cols, std::int64_t head,
                      std::int64_t head_dim, const DenseMatrix<double>& omega,
                      std::int64_t first_col);

// Throws Error unless `new_kv` divides the current KV heads.
std::int64_t GroupSize(const AttentionProjections& p, std::int64_t new_kv);

// Baseline: each group's K and V projections averaged; queries and W_O untouched.
void MeanPoolKv(AttentionProjections& p, std::int64_t new_kv);

// Values: top-d eigenvectors Omega of the group's stacked value second moment; W_V <- Omega W_V,
// W_O[:, head] <- W_O[:, head] Omega_j^T. `value_moment` is [KV d, KV d] row-major.
// With `weight_by_output`, the subspace minimises the error of what W_O makes of the values
// instead: E || A (v - D E v) ||^2, with A^T A = G block-diagonal over the group's KV heads, block
// m = sum over the query heads h reading m of W_O[:, h]^T W_O[:, h] (each head's output error
// counted alone). Solution (reduced-rank regression): Q = top-d eigenvectors of
// G^1/2 Sigma G^1/2, encoder E = Q^T G^1/2 (into W_V), decoder D = G^-1/2 Q (into W_O). Equal to
// the plain fold when G is a multiple of I; lossless whenever the plain one is.
// `threads`: the groups, then the heads of W_O, spread over that many threads (ParallelItems;
// the result does not depend on it). The same in the key folds below.
void FoldValues(AttentionProjections& p, std::int64_t new_kv,
                const std::vector<double>& value_moment, FoldRecord& record,
                bool weight_by_output = false, int threads = 1);

// The energy each group's value fold to `new_kv` heads keeps, as FoldValues records it in
// value_energy_kept, from eigenvalues alone (no eigenvectors, no folded weights): what
// kv-heads=auto compares. Equal to FoldValues' record to rounding, not bit for bit.
std::vector<double> ValueEnergyKept(const AttentionProjections& p, std::int64_t new_kv,
                                    const std::vector<double>& value_moment, bool weight_by_output);

// The output-error Gram G of group g's stacked values ([t d, t d], see FoldValues).
Matrix OutputGram(const AttentionProjections& p, std::int64_t new_kv, std::int64_t group);

// Keys, RoPE-commuting: per rotary pair, the top eigenvector u of the group's Hermitian second
// moment of complex pre-RoPE keys; k' = sum conj(u_m) z_m, queries reading head m times conj(u_m).
// `query_energy` ([H d] sums of squared pre-RoPE queries, or null): when given, each head's key
// error is weighted by the query energy that reads it at that pair/channel (the expected score
// error), and the fold decodes with u_m / s_m and encodes with u_m s_m (METHODS.md).
void FoldKeysCommute(AttentionProjections& p, std::int64_t new_kv,
                     const std::vector<double>& key_pre_rope_moment, FoldRecord& record,
                     const std::vector<double>* query_energy = nullptr, int threads = 1);

// The commuting key fold's coefficients for every original KV head m and rotary pair j: the new
// key pair of m's group is sum_m conj(encode_m) z_m, and the query heads reading m multiply their
// pair by conj(decode_m) (encode = u_m s_m, decode = u_m / s_m; s = 1 without query energy).
struct KeyFoldCoefficients {
  std::vector<std::vector<std::complex<double>>> encode, decode;  // [KV][d / 2]
};
KeyFoldCoefficients CommutingKeyFold(const AttentionProjections& p, std::int64_t new_kv,
                                     const std::vector<double>& key_pre_rope_moment,
                                     FoldRecord& record,
                                     const std::vector<double>* query_energy = nullptr);
void ApplyKeyFold(AttentionProjections& p, std::int64_t new_kv, const KeyFoldCoefficients& f,
                  int threads = 1);

// A layer's per-head query and key RMSNorm weights (Qwen3, Gemma 3) as they multiply, [d] each.
struct HeadNorms {
  std::vector<double> query, key;
};

// Keys behind a per-head RMSNorm, approximately (docs/gqa.md, "Qwen3 and Gemma 3"): the
// commuting fold of the normalised keys (`key_pre_rope_moment` is theirs; `query_energy`, of the
// normalised queries, weights it as in FoldKeysCommute), applied to diag(w_k) W_K and
// diag(w_q) W_Q and divided by the norm weights again; the norm weights stay. Exact when the
// heads of a group differ by a positive factor; otherwise the norm rescales each token's key and
// query. Throws Error for a norm weight of 0.
void FoldNormalizedKeys(AttentionProjections& p, std::int64_t new_kv,
                        const std::vector<double>& key_pre_rope_moment, FoldRecord& record,
                        const std::vector<double>* query_energy, const HeadNorms& norms,
                        int threads = 1);

// Keys, reconstruct mode: top-d eigenvectors of the group's stacked post-RoPE keys. W_K and W_Q
// are unchanged; the returned matrices are applied by the runtime after RoPE.
KeyReconstruction ReconstructKeys(const AttentionProjections& p, std::int64_t new_kv,
                                  const std::vector<double>& key_post_rope_moment,
                                  FoldRecord& record,
                                  const std::vector<double>* query_energy = nullptr);

}  // namespace kvfold
