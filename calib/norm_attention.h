// Key norm vs attention (arXiv 2406.11430): for one calibration window and one KV head, how well
// "drop the highest-L2-norm keys first" matches "drop the least-attended keys first".
//
// Attention received by key j: A_j = sum over the query heads h that read the KV head and the
// queries i >= j of softmax_j(q_hi . k_j / sqrt(d)), divided by (heads x T), so sum_j A_j = 1:
// A is the share of the window's whole attention mass that key j draws (causal attention, with
// the layer's own scale, soft-cap and sliding window: ScoreRule).
// Dropping a set of keys loses the sum of their A. For a drop order (the first m dropped when m
// keys go), loss(m) is that sum; the ideal order drops ascending A. The attention loss of an
// order is ALR = (1/T) sum_{m=1..T} (loss(m) - loss_ideal(m)) >= 0: the mean gap to the ideal,
// 0 for the ideal order itself, about (1/T) sum (m/T - loss_ideal(m)) for a random order.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace kvfold {

// Keep ratios the loss curves are sampled at: 0.1, 0.2, ..., 1.0.
inline constexpr int kKeepGridSize = 10;
double KeepGridRatio(int index);

// Spearman rank correlation (average ranks for ties); 0 when either side is constant.
double Spearman(const std::vector<double>& x, const std::vector<double>& y);

// Drop orders (indices, dropped first to last).
std::vector<std::int64_t> HighestFirst(
    const std::vector<double>& values);  // L2: highest norm first
std::vector<std::int64_t> LowestFirst(
    const std::vector<double>& values);  // ideal: least attention first

// loss[m] for m = 0..T: attention mass lost when the first m of `order` are dropped.
std::vector<double> DropLoss(const std::vector<double>& attention,
                             const std::vector<std::int64_t>& order);

// ALR of `order` against the ideal order for `attention` (see the top of this file).
double AttentionLossRatio(const std::vector<double>& attention,
                          const std::vector<std::int64_t>& order);
// The expected ALR of a uniformly random order.
double RandomAttentionLossRatio(const std::vector<double>& attention);

struct HeadNormAttention {
  double spearman = 0;  // Spearman(key L2 norm, A)
  double alr = 0;       // ALR of the L2 order (highest norm dropped first)
  double alr_random = 0;
  double sink_share = 0;  // A of the window's first token (BOS): the attention-sink share
  // Attention lost when keeping KeepGridRatio(r) of the keys: L2 order, ideal order.
  std::array<double, kKeepGridSize> loss_l2{}, loss_ideal{};
  void Add(const HeadNormAttention& other);
};

// How a layer's scores are formed, as its runtime forms them: the score q . k times `scale`
// (0: head_dim^-1/2; Gemma's query_pre_attn_scalar^-1/2), then cap tanh(score / cap) when
// `soft_cap` > 0 (Gemma 2), and query i sees key j only when i - j < `window` (a sliding layer;
// 0: every earlier key).
struct ScoreRule {
  double scale = 0;
  double soft_cap = 0;
  std::int64_t window = 0;
};

// Keys of token j: keys + j * key_stride; query head h of token i: queries + i * query_stride +
// h * head_dim (post-RoPE both).
struct NormAttentionInput {
  std::int64_t tokens = 0, head_dim = 0, group = 1;
  const float* keys = nullptr;
  std::int64_t key_stride = 0;
  const float* queries = nullptr;
  std::int64_t query_stride = 0;
  ScoreRule rule;
};

// A_j of one head and window (sums to 1).
std::vector<double> AttentionReceived(const NormAttentionInput& in);

HeadNormAttention MeasureHead(const NormAttentionInput& in);

}  // namespace kvfold
