#include "calib/kv_statistics.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "calib/moment_sums.h"
#include "formats/error.h"

namespace kvfold {
namespace {

// acc += ĥ_a^T ĥ_b summed over rows, ĥ = [h, 1]: `a` and `b` are [rows, D] row-major.
void AccumulateInputMoment(const float* a, const float* b, std::int64_t rows, std::int64_t D,
                           std::vector<float>& scratch, std::vector<double>& acc) {
  const std::int64_t W = D + 1;
  if (acc.empty()) acc.assign(static_cast<std::size_t>(W * W), 0.0);
  AddCrossMoment(a, b, rows, D, scratch, acc.data(), W);
  for (std::int64_t r = 0; r < rows; ++r) {  // the constant column and row: sums of h
    for (std::int64_t i = 0; i < D; ++i) {
      acc[static_cast<std::size_t>(i * W + D)] += a[r * D + i];
      acc[static_cast<std::size_t>(D * W + i)] += b[r * D + i];
    }
  }
  acc[static_cast<std::size_t>(D * W + D)] += static_cast<double>(rows);
}

// acc's lower triangle += X^T X for X = `view` seen as [rows, dim] row-major.
void AccumulateSecondMoment(const FloatView& view, std::int64_t dim, std::vector<float>& scratch,
                            std::vector<double>& acc) {
  const std::int64_t rows = view.size() / dim;
  if (rows * dim != view.size()) Fail("calibration", "capture is not a whole number of rows");
  if (acc.empty()) acc.assign(static_cast<std::size_t>(dim * dim), 0.0);
  AddSymmetricMoment(view.data, rows, dim, scratch, acc.data());
}

// Norm-vs-attention measures of every (sequence, KV head) of a [B, T, H, d] / [B, T, KV, d] pair.
void AccumulateNormAttention(const FloatView& q, const FloatView& k, const ScoreRule& rule,
                             LayerKvStatistics& layer) {
  const std::int64_t B = k.shape[0], T = k.shape[1], KV = k.shape[2], d = k.shape[3],
                     H = q.shape[2];
  if (layer.norm_attention.empty()) layer.norm_attention.resize(static_cast<std::size_t>(KV));
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t g = 0; g < KV; ++g) {
      NormAttentionInput in;
      in.tokens = T;
      in.head_dim = d;
      in.group = H / KV;
      in.keys = k.data + b * T * KV * d + g * d;
      in.key_stride = KV * d;
      in.queries = q.data + b * T * H * d + g * in.group * d;
      in.query_stride = H * d;
      in.rule = rule;
      layer.norm_attention[static_cast<std::size_t>(g)].Add(MeasureHead(in));
    }
  }
}

// Per-channel min/max over the rows of a [..., heads, d] capture.
void AccumulateRange(const FloatView& x, std::vector<float>& lo, std::vector<float>& hi) {
  const std::int64_t width = x.shape[x.shape.size() - 2] * x.shape.back();
  if (lo.empty()) {
    lo.assign(static_cast<std::size_t>(width), INFINITY);
    hi.assign(static_cast<std::size_t>(width), -INFINITY);
  }
  for (std::int64_t r = 0; r < x.size() / width; ++r) {
    const float* row = x.data + r * width;
    for (std::int64_t c = 0; c < width; ++c) {
      lo[static_cast<std::size_t>(c)] = std::min(lo[static_cast<std::size_t>(c)], row[c]);
      hi[static_cast<std::size_t>(c)] = std::max(hi[static_cast<std::size_t>(c)], row[c]);
    }
  }
}

// Per (head, rotary pair) the largest norm of (x_c, x_{c + d/2}) over the rows of [..., heads, d].
void AccumulatePairMax(const FloatView& x, std::vector<float>& out) {
  const std::int64_t heads = x.shape[x.shape.size() - 2], d = x.shape.back(), half = d / 2;
  if (out.empty()) out.assign(static_cast<std::size_t>(heads * half), 0.0f);
  for (std::int64_t r = 0; r < x.size() / (heads * d); ++r) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const float* v = x.data + (r * heads + h) * d;
      for (std::int64_t c = 0; c < half; ++c) {
        float& m = out[static_cast<std::size_t>(h * half + c)];
        m = std::max(m, std::hypot(v[c], v[c + half]));
      }
    }
  }
}

}  // namespace

namespace {

void AddSums(std::vector<double>& into, const std::vector<double>& from) {
  if (from.empty()) return;
  if (into.empty()) into.assign(from.size(), 0.0);
  for (std::size_t i = 0; i < from.size(); ++i) into[i] += from[i];
}

void KeepExtreme(std::vector<float>& into, const std::vector<float>& from, bool take_max) {
  if (from.empty()) return;
  if (into.empty()) {
    into = from;
    return;
  }
  for (std::size_t i = 0; i < from.size(); ++i)
    into[i] = take_max ? std::max(into[i], from[i]) : std::min(into[i], from[i]);
}

}  // namespace

void LayerKvStatistics::Merge(const LayerKvStatistics& other) {
  AddSums(key_pre_rope, other.key_pre_rope);
  AddSums(key_post_rope, other.key_post_rope);
  AddSums(value, other.value);
  AddSums(query_energy, other.query_energy);
  KeepExtreme(key_min, other.key_min, false);
  KeepExtreme(key_max, other.key_max, true);
  KeepExtreme(value_min, other.value_min, false);
  KeepExtreme(value_max, other.value_max, true);
  KeepExtreme(query_pair_max, other.query_pair_max, true);
  KeepExtreme(key_pair_max, other.key_pair_max, true);
  if (norm_attention.empty()) norm_attention.resize(other.norm_attention.size());
  for (std::size_t g = 0; g < other.norm_attention.size(); ++g)
    norm_attention[g].Add(other.norm_attention[g]);
}

void KvStatistics::Merge(const KvStatistics& other) {
  if (other.collected != collected || other.layers.size() != layers.size() ||
      other.dim() != dim()) {
    Fail("calibration", "internal: merging statistics of different shapes");
  }
  tokens += other.tokens;
  windows += other.windows;
  for (const auto& [pair, moment] : other.input_moments) AddSums(input_moments[pair], moment);
  for (std::size_t l = 0; l < layers.size(); ++l) layers[l].Merge(other.layers[l]);
}

std::vector<double> KvStatistics::InputMoment(int a, int b) const {
  const auto it = input_moments.find({std::min(a, b), std::max(a, b)});
  if (it == input_moments.end()) {
    Fail("calibration", "internal: the input moment of layers " + std::to_string(a) + " and " +
                            std::to_string(b) + " was not collected");
  }
  if (a <= b) return it->second;
  const std::int64_t W = hidden + 1;  // stored as (b, a): transpose
  std::vector<double> t(it->second.size());
  for (std::int64_t i = 0; i < W; ++i) {
    for (std::int64_t j = 0; j < W; ++j)
      t[static_cast<std::size_t>(i * W + j)] = it->second[static_cast<std::size_t>(j * W + i)];
  }
  return t;
}

std::vector<ScoreRule> ScoreRulesOf(const ModelConfig& config) {
  std::vector<ScoreRule> rules;
  for (std::int64_t l = 0; l < config.num_hidden_layers; ++l)
    rules.push_back({config.AttentionScale(), config.attn_logit_softcap, config.WindowOf(l)});
  return rules;
}

KvStatisticsCollector::KvStatisticsCollector(unsigned statistics, int layers, std::int64_t kv_heads,
                                             std::int64_t head_dim, std::int64_t hidden,
                                             std::vector<LayerPair> input_pairs) {
  for (const LayerPair& p : input_pairs)
    input_pairs_.push_back({std::min(p.first, p.second), std::max(p.first, p.second)});
  std::sort(input_pairs_.begin(), input_pairs_.end());
  input_pairs_.erase(std::unique(input_pairs_.begin(), input_pairs_.end()), input_pairs_.end());
  for (const LayerPair& p : input_pairs_) {
    if (p.first != p.second) last_partner_[p.first] = std::max(last_partner_[p.first], p.second);
  }
  if (!input_pairs_.empty()) statistics |= kStatLayerInputs;
  if ((statistics & kStatLayerInputs) && hidden <= 0)
    Fail("calibration", "internal: input moments need the hidden size");
  stats_.hidden = hidden;
  stats_.collected = statistics;
  count_layer_ = (statistics & ~kStatLayerInputs) != 0 || input_pairs_.empty()
                     ? 0
                     : input_pairs_.front().first;
  stats_.kv_heads = kv_heads;
  stats_.head_dim = head_dim;
  stats_.layers.resize(static_cast<std::size_t>(layers));
  lower_only_.assign(static_cast<std::size_t>(layers), false);
}

unsigned KvStatisticsCollector::Wants(int layer) const {
  unsigned bits = 0;
  for (const LayerPair& p : input_pairs_) {
    if (p.first == layer || p.second == layer) bits |= kCaptureAttnInput;
  }
  if (stats_.collected & kStatKeyPreRope) bits |= kCaptureKeyPreRope;
  if (stats_.collected & kStatKeyPostRope) bits |= kCaptureKeyPostRope;
  if (stats_.collected & kStatValue) bits |= kCaptureValue;
  if (stats_.collected & kStatQueryEnergy) bits |= kCaptureQueryPreRope;
  if (stats_.collected & kStatNormAttention) bits |= kCaptureQueryPostRope | kCaptureKeyPostRope;
  if (stats_.collected & kStatKvRange) bits |= kCaptureKeyPostRope | kCaptureValue;
  if (stats_.collected & kStatQkPairMax) bits |= kCaptureQueryPreRope | kCaptureKeyPreRope;
  return bits;
}

void KvStatisticsCollector::MirrorMoments(std::size_t layer) {
  if (!lower_only_.at(layer)) return;
  LayerKvStatistics& l = stats_.layers[layer];
  for (std::vector<double>* m : {&l.key_pre_rope, &l.key_post_rope, &l.value}) {
    const auto dim = static_cast<std::int64_t>(std::llround(std::sqrt(double(m->size()))));
    MirrorLowerTriangle(m->data(), dim);
  }
  lower_only_[layer] = false;
}

const KvStatistics& KvStatisticsCollector::statistics() {
  for (std::size_t l = 0; l < stats_.layers.size(); ++l) MirrorMoments(l);
  return stats_;
}

LayerKvStatistics KvStatisticsCollector::TakeLayer(int layer) {
  MirrorMoments(static_cast<std::size_t>(layer));
  return std::exchange(stats_.layers.at(static_cast<std::size_t>(layer)), LayerKvStatistics());
}

void KvStatisticsCollector::Observe(const AttentionCapture& c) {
  LayerKvStatistics& layer = stats_.layers.at(static_cast<std::size_t>(c.layer));
  const std::int64_t dim =
      layer_kv_heads_.empty()
          ? stats_.dim()
          : layer_kv_heads_.at(static_cast<std::size_t>(c.layer)) * stats_.head_dim;
  if (stats_.collected & (kStatKeyPreRope | kStatKeyPostRope | kStatValue))
    lower_only_.at(static_cast<std::size_t>(c.layer)) = true;
  if (stats_.collected & kStatKeyPreRope)
    AccumulateSecondMoment(c.key_pre_rope, dim, scratch_, layer.key_pre_rope);
  if (stats_.collected & kStatKeyPostRope)
    AccumulateSecondMoment(c.key_post_rope, dim, scratch_, layer.key_post_rope);
  if (stats_.collected & kStatValue) AccumulateSecondMoment(c.value, dim, scratch_, layer.value);
  if (stats_.collected & kStatQueryEnergy) {
    const FloatView& q = c.query_pre_rope;
    const std::int64_t width = q.shape.back() * q.shape[q.shape.size() - 2];  // H d
    if (layer.query_energy.empty()) layer.query_energy.assign(static_cast<std::size_t>(width), 0.0);
    for (std::int64_t row = 0; row < q.size() / width; ++row) {
      const float* r = q.data + row * width;
      for (std::int64_t c2 = 0; c2 < width; ++c2)
        layer.query_energy[static_cast<std::size_t>(c2)] += double(r[c2]) * r[c2];
    }
  }
  if (stats_.collected & kStatNormAttention) {
    const ScoreRule rule =
        score_rules_.empty() ? ScoreRule() : score_rules_.at(static_cast<std::size_t>(c.layer));
    AccumulateNormAttention(c.query_post_rope, c.key_post_rope, rule, layer);
  }
  if (stats_.collected & kStatKvRange) {
    AccumulateRange(c.key_post_rope, layer.key_min, layer.key_max);
    AccumulateRange(c.value, layer.value_min, layer.value_max);
  }
  if (stats_.collected & kStatQkPairMax) {
    AccumulatePairMax(c.query_pre_rope, layer.query_pair_max);
    AccumulatePairMax(c.key_pre_rope, layer.key_pair_max);
  }
  if (!input_pairs_.empty() && c.attn_input.data) {
    const std::int64_t D = stats_.hidden, rows = c.attn_input.size() / D;
    for (const LayerPair& p : input_pairs_) {
      if (p.second != c.layer) continue;
      const float* earlier =
          p.first == c.layer ? c.attn_input.data : pending_.at({c.sequence, p.first}).data();
      AccumulateInputMoment(earlier, c.attn_input.data, rows, D, scratch_, stats_.input_moments[p]);
    }
    for (const auto& [first, last] : last_partner_) {  // h no later layer of this batch needs
      if (last == c.layer) pending_.erase({c.sequence, first});
    }
    if (last_partner_.count(c.layer) != 0) {  // kept for a pair with a later layer
      pending_[{c.sequence, c.layer}].assign(c.attn_input.data,
                                             c.attn_input.data + c.attn_input.size());
    }
  }
  if (c.layer == count_layer_) {  // the first layer every batch shows this collector
    const FloatView& any = c.value.data           ? c.value
                           : c.key_pre_rope.data  ? c.key_pre_rope
                           : c.key_post_rope.data ? c.key_post_rope
                                                  : c.attn_input;
    stats_.tokens += any.size() / (any.data == c.attn_input.data ? stats_.hidden : dim);
    stats_.windows += any.shape.front();
  }
}

}  // namespace kvfold
