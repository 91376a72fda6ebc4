#include "calib/norm_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "formats/error.h"

namespace kvfold {
namespace {

// Average ranks (1-based), ties sharing the mean of their positions.
std::vector<double> Ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  std::vector<double> rank(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double r = 0.5 * static_cast<double>(i + j) + 1.0;
    for (std::size_t k = i; k <= j; ++k) rank[order[k]] = r;
    i = j + 1;
  }
  return rank;
}

std::vector<std::int64_t> SortedOrder(const std::vector<double>& values, bool descending) {
  std::vector<std::int64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    const double x = values[static_cast<std::size_t>(a)], y = values[static_cast<std::size_t>(b)];
    return descending ? x > y : x < y;
  });
  return order;
}

double MeanGap(const std::vector<double>& loss, const std::vector<double>& ideal) {
  double gap = 0;
  for (std::size_t m = 1; m < loss.size(); ++m) gap += loss[m] - ideal[m];
  return gap / static_cast<double>(loss.size() - 1);
}

}  // namespace

double KeepGridRatio(int index) { return (index + 1) / 10.0; }  // exact decimals in JSON

double Spearman(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) Fail("Spearman", "inputs differ in length");
  const std::size_t n = x.size();
  if (n < 2) return 0;
  const std::vector<double> rx = Ranks(x), ry = Ranks(y);
  const double mean = 0.5 * static_cast<double>(n + 1);
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sxy += (rx[i] - mean) * (ry[i] - mean);
    sxx += (rx[i] - mean) * (rx[i] - mean);
    syy += (ry[i] - mean) * (ry[i] - mean);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

std::vector<std::int64_t> HighestFirst(const std::vector<double>& values) {
  return SortedOrder(values, true);
}
std::vector<std::int64_t> LowestFirst(const std::vector<double>& values) {
  return SortedOrder(values, false);
}

std::vector<double> DropLoss(const std::vector<double>& attention,
                             const std::vector<std::int64_t>& order) {
  if (order.size() != attention.size()) Fail("DropLoss", "order and attention differ in length");
  std::vector<double> loss(attention.size() + 1, 0.0);
  for (std::size_t m = 0; m < order.size(); ++m)
    loss[m + 1] = loss[m] + attention[static_cast<std::size_t>(order[m])];
  return loss;
}

double AttentionLossRatio(const std::vector<double>& attention,
                          const std::vector<std::int64_t>& order) {
  if (attention.empty()) return 0;
  return MeanGap(DropLoss(attention, order), DropLoss(attention, LowestFirst(attention)));
}

double RandomAttentionLossRatio(const std::vector<double>& attention) {
  if (attention.empty()) return 0;
  const double total = std::accumulate(attention.begin(), attention.end(), 0.0);
  const auto T = static_cast<double>(attention.size());
  std::vector<double> expected(attention.size() + 1);
  for (std::size_t m = 0; m < expected.size(); ++m)
    expected[m] = total * static_cast<double>(m) / T;
  return MeanGap(expected, DropLoss(attention, LowestFirst(attention)));
}

void HeadNormAttention::Add(const HeadNormAttention& o) {
  spearman += o.spearman;
  alr += o.alr;
  alr_random += o.alr_random;
  sink_share += o.sink_share;
  for (int r = 0; r < kKeepGridSize; ++r) {
    loss_l2[static_cast<std::size_t>(r)] += o.loss_l2[static_cast<std::size_t>(r)];
    loss_ideal[static_cast<std::size_t>(r)] += o.loss_ideal[static_cast<std::size_t>(r)];
  }
}

std::vector<double> AttentionReceived(const NormAttentionInput& in) {
  const std::int64_t T = in.tokens, d = in.head_dim;
  const float scale = static_cast<float>(
      in.rule.scale > 0 ? in.rule.scale : 1.0 / std::sqrt(static_cast<double>(d)));
  const auto cap = static_cast<float>(in.rule.soft_cap);
  // Transposed keys: each score row is d contiguous axpys, which the compiler vectorizes.
  std::vector<float> keys_t(static_cast<std::size_t>(d * T));
  for (std::int64_t j = 0; j < T; ++j) {
    for (std::int64_t c = 0; c < d; ++c)
      keys_t[static_cast<std::size_t>(c * T + j)] = in.keys[j * in.key_stride + c];
  }
  std::vector<double> received(static_cast<std::size_t>(T), 0.0);
  std::vector<float> s(static_cast<std::size_t>(T));
  for (std::int64_t h = 0; h < in.group; ++h) {
    for (std::int64_t i = 0; i < T; ++i) {
      const float* q = in.queries + i * in.query_stride + h * d;
      const std::int64_t first =
          in.rule.window > 0 ? std::max<std::int64_t>(0, i - in.rule.window + 1) : 0;
      std::fill(s.begin() + first, s.begin() + i + 1, 0.0f);
      for (std::int64_t c = 0; c < d; ++c) {
        const float qc = q[c] * scale;
        const float* kt = keys_t.data() + c * T;
        for (std::int64_t j = first; j <= i; ++j) s[static_cast<std::size_t>(j)] += qc * kt[j];
      }
      if (cap > 0) {
        for (std::int64_t j = first; j <= i; ++j)
          s[static_cast<std::size_t>(j)] = cap * std::tanh(s[static_cast<std::size_t>(j)] / cap);
      }
      const float m = *std::max_element(s.begin() + first, s.begin() + i + 1);
      double sum = 0;
      for (std::int64_t j = first; j <= i; ++j)
        sum += std::exp(double(s[static_cast<std::size_t>(j)] - m));
      for (std::int64_t j = first; j <= i; ++j) {
        received[static_cast<std::size_t>(j)] +=
            std::exp(double(s[static_cast<std::size_t>(j)] - m)) / sum;
      }
    }
  }
  const double total = static_cast<double>(in.group * T);
  for (double& a : received) a /= total;
  return received;
}

HeadNormAttention MeasureHead(const NormAttentionInput& in) {
  const std::vector<double> attention = AttentionReceived(in);
  std::vector<double> norm(static_cast<std::size_t>(in.tokens));
  for (std::int64_t j = 0; j < in.tokens; ++j) {
    double s = 0;
    for (std::int64_t c = 0; c < in.head_dim; ++c)
      s += double(in.keys[j * in.key_stride + c]) * in.keys[j * in.key_stride + c];
    norm[static_cast<std::size_t>(j)] = std::sqrt(s);
  }
  HeadNormAttention out;
  out.spearman = Spearman(norm, attention);
  const std::vector<double> l2 = DropLoss(attention, HighestFirst(norm));
  const std::vector<double> ideal = DropLoss(attention, LowestFirst(attention));
  out.alr = MeanGap(l2, ideal);
  out.alr_random = RandomAttentionLossRatio(attention);
  out.sink_share = attention.empty() ? 0.0 : attention.front();
  for (int r = 0; r < kKeepGridSize; ++r) {
    const auto kept =
        static_cast<std::int64_t>(std::llround(KeepGridRatio(r) * static_cast<double>(in.tokens)));
    const auto dropped = static_cast<std::size_t>(in.tokens - kept);
    out.loss_l2[static_cast<std::size_t>(r)] = l2[dropped];
    out.loss_ideal[static_cast<std::size_t>(r)] = ideal[dropped];
  }
  return out;
}

}  // namespace kvfold
