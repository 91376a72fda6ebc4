#include "calib/norm_attention.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>

#include "calib/kv_statistics.h"

using namespace kvfold;

TEST_CASE("Spearman: monotone, reversed, ties and a worked example", "[norm-attention]") {
  CHECK(Spearman({1, 2, 3, 4}, {10, 20, 30, 40}) == Approx(1.0));
  CHECK(Spearman({1, 2, 3, 4}, {4, 3, 2, 1}) == Approx(-1.0));
  CHECK(Spearman({1, 1, 1}, {1, 2, 3}) == 0.0);
  // x ranks 1 2 3 4 5, y = (2, 1, 4, 3, 5) ranks the same: rho = 1 - 6 * 4 / (5 * 24) = 0.8.
  CHECK(Spearman({1, 2, 3, 4, 5}, {2, 1, 4, 3, 5}) == Approx(0.8));
  // Ties take average ranks: y ranks (1.5, 1.5, 3); Pearson of ranks (1,2,3) and that = 0.866...
  CHECK(Spearman({1, 2, 3}, {5, 5, 9}) == Approx(std::sqrt(3.0) / 2));
}

TEST_CASE("ALR: zero for the ideal order, positive otherwise, random matches sampling",
          "[norm-attention]") {
  const std::vector<double> a = {0.4, 0.05, 0.2, 0.1, 0.25};
  CHECK(AttentionLossRatio(a, LowestFirst(a)) == 0.0);  // the oracle's own order
  CHECK(AttentionLossRatio(a, HighestFirst(a)) > AttentionLossRatio(a, {1, 3, 0, 2, 4}));
  CHECK(AttentionLossRatio(a, {1, 3, 0, 2, 4}) > 0);
  // Hand value: dropping most-attended first loses 0.4, 0.65, 0.85, 0.95, 1.0 vs ideal 0.05,
  // 0.15, 0.35, 0.6, 1.0; mean gap = (0.35 + 0.5 + 0.5 + 0.35 + 0) / 5 = 0.34.
  CHECK(AttentionLossRatio(a, HighestFirst(a)) == Approx(0.34));
  // The closed-form random ALR against the average over many random orders.
  std::mt19937 rng(7);
  std::vector<std::int64_t> order(a.size());
  std::iota(order.begin(), order.end(), 0);
  double sampled = 0;
  const int trials = 20000;
  for (int t = 0; t < trials; ++t) {
    std::shuffle(order.begin(), order.end(), rng);
    sampled += AttentionLossRatio(a, order);
  }
  CHECK(sampled / trials == Approx(RandomAttentionLossRatio(a)).margin(3e-3));
}

// The attention a key receives under a layer's own score rule, in double, written from the
// rule's definition (Gemma: scale, then soft-cap, then the sliding-window mask).
std::vector<double> ReceivedByRule(const std::vector<float>& q, const std::vector<float>& k,
                                   std::int64_t T, std::int64_t d, std::int64_t group,
                                   const ScoreRule& rule) {
  const double scale = rule.scale > 0 ? rule.scale : 1 / std::sqrt(double(d));
  std::vector<double> want(static_cast<std::size_t>(T), 0.0);
  for (std::int64_t h = 0; h < group; ++h) {
    for (std::int64_t i = 0; i < T; ++i) {
      std::vector<double> e(static_cast<std::size_t>(T), 0.0);
      for (std::int64_t j = 0; j <= i; ++j) {
        if (rule.window > 0 && i - j >= rule.window) continue;  // outside the sliding window
        double dot = 0;
        for (std::int64_t c = 0; c < d; ++c)
          dot += double(q[static_cast<std::size_t>((i * group + h) * d + c)]) *
                 k[static_cast<std::size_t>(j * d + c)];
        double score = dot * scale;
        if (rule.soft_cap > 0) score = rule.soft_cap * std::tanh(score / rule.soft_cap);
        e[static_cast<std::size_t>(j)] = std::exp(score);
      }
      const double z = std::accumulate(e.begin(), e.end(), 0.0);
      for (std::int64_t j = 0; j < T; ++j)
        want[static_cast<std::size_t>(j)] += e[static_cast<std::size_t>(j)] / z / double(group * T);
    }
  }
  return want;
}

TEST_CASE("attention received follows the layer's scale, soft-cap and sliding window",
          "[norm-attention]") {
  const std::int64_t T = 12, d = 4, group = 2;
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> k(static_cast<std::size_t>(T * d)), q(static_cast<std::size_t>(T * group * d));
  for (auto& x : k) x = 2 * n(rng);
  for (auto& x : q) x = 2 * n(rng);
  const std::vector<double> plain = ReceivedByRule(q, k, T, d, group, {});
  // Each rule is followed (against the reference) and, but the plain one, changes the answer.
  // Float scores against double: 1e-5 relative.
  for (const ScoreRule& rule : {ScoreRule{}, ScoreRule{0.3, 0, 0}, ScoreRule{0, 1.5, 0},
                                ScoreRule{0, 0, 3}, ScoreRule{0.7, 2.0, 5}}) {
    INFO("scale " << rule.scale << " cap " << rule.soft_cap << " window " << rule.window);
    NormAttentionInput in{T, d, group, k.data(), d, q.data(), group * d, rule};
    const std::vector<double> got = AttentionReceived(in);
    const std::vector<double> want = ReceivedByRule(q, k, T, d, group, rule);
    CHECK(std::accumulate(got.begin(), got.end(), 0.0) == Approx(1.0));
    double moved = 0;
    for (std::int64_t j = 0; j < T; ++j) {
      const auto u = static_cast<std::size_t>(j);
      CHECK(got[u] == Approx(want[u]).epsilon(1e-5));
      moved = std::max(moved, std::abs(want[u] - plain[u]));
    }
    const bool plain_rule = rule.scale == 0 && rule.soft_cap == 0 && rule.window == 0;
    CHECK((plain_rule || moved > 1e-3));
  }
  // A window of one: every query sees only itself, so every key draws 1/T.
  NormAttentionInput self{T, d, group, k.data(), d, q.data(), group * d, ScoreRule{0, 0, 1}};
  for (double a : AttentionReceived(self)) CHECK(a == Approx(1.0 / T));
}

TEST_CASE("head measures: keys whose norm decides attention score a perfect L2 order",
          "[norm-attention]") {
  // Query along +x, keys along -x with growing length: the lowest-norm key gets the most
  // attention from every query that sees it, so dropping the highest norms first is ideal.
  const std::int64_t T = 16;
  std::vector<float> k, q;
  for (std::int64_t j = 0; j < T; ++j) {
    k.insert(k.end(), {-0.5f * static_cast<float>(j + 1), 0.0f});
    q.insert(q.end(), {1.0f, 0.0f});
  }
  NormAttentionInput in{T, 2, 1, k.data(), 2, q.data(), 2, ScoreRule{}};
  const HeadNormAttention m = MeasureHead(in);
  CHECK(m.spearman == Approx(-1.0));
  CHECK(m.alr == Approx(0.0).margin(1e-12));
  CHECK(m.alr_random > 0.1);
  CHECK(m.loss_l2.back() == 0.0);  // keep 1.0 loses nothing
  for (int r = 0; r < kKeepGridSize; ++r)
    CHECK(m.loss_l2[static_cast<std::size_t>(r)] ==
          Approx(m.loss_ideal[static_cast<std::size_t>(r)]));
}

TEST_CASE("kv-norm-analysis's statistics use each layer's score rule from the config",
          "[norm-attention]") {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.head_dim = 4;
  c.query_pre_attn_scalar = 16;  // Gemma: scores x 16^-1/2
  c.attn_logit_softcap = 50;
  c.layer_window = {1, 0};  // layer 0 sliding (a window of one token), layer 1 global
  const std::vector<ScoreRule> rules = ScoreRulesOf(c);
  REQUIRE(rules.size() == 2);
  CHECK(rules[0].scale == 0.25);
  CHECK(rules[1].soft_cap == 50);
  CHECK(rules[0].window == 1);
  CHECK(rules[1].window == 0);

  const std::int64_t T = 8, d = 4;
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> q(static_cast<std::size_t>(T * d)), k(q.size());
  for (auto& x : q) x = 3 * n(rng);
  for (auto& x : k) x = 3 * n(rng);
  KvStatisticsCollector collector(kStatNormAttention, 2, 1, d);
  collector.SetScoreRules(rules);
  for (int layer : {0, 1}) {
    AttentionCapture capture;
    capture.layer = layer;
    capture.query_post_rope = {q.data(), {1, T, 1, d}};
    capture.key_post_rope = {k.data(), {1, T, 1, d}};
    collector.Observe(capture);
  }
  // Layer 0 sees one token per query: its first key draws 1/T. Layer 1 attends causally: the
  // first key draws every query's attention at least a little, and all of the first query's.
  const double sink0 = collector.statistics().layers[0].norm_attention.at(0).sink_share;
  const double sink1 = collector.statistics().layers[1].norm_attention.at(0).sink_share;
  CHECK(sink0 == Approx(1.0 / T));
  CHECK(sink1 > 1.0 / T);
}
