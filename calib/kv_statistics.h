// KvStatistics: per-layer second moments of keys and values over calibration tokens, the input
// of every KV-head compression pass. Collected by KvStatisticsCollector, a LayerObserver that
// asks the forward pass for exactly the captures the requested statistics need.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "calib/layer_observer.h"
#include "calib/norm_attention.h"
#include "formats/model_config.h"

namespace kvfold {

enum StatisticBits : unsigned {
  kStatKeyPreRope = 1u << 0,     // sum k k^T of pre-RoPE keys  [KV d, KV d]
  kStatKeyPostRope = 1u << 1,    // sum k k^T of post-RoPE keys [KV d, KV d]
  kStatValue = 1u << 2,          // sum v v^T                   [KV d, KV d]
  kStatQueryEnergy = 1u << 3,    // sum q^2 per channel of pre-RoPE queries [H d]
  kStatNormAttention = 1u << 4,  // key norm vs attention measures per KV head, summed over windows
  kStatKvRange = 1u << 5,        // per-channel min/max of post-RoPE keys and of values [KV d]
  kStatQkPairMax = 1u << 6,      // per rotary pair, max norm of queries [H d/2] and keys [KV d/2]
  // Cross moments of attention inputs between the layer pairs a pass asks for (cross-layer KV
  // sharing): they describe h, not K/V, so a pass may read them after another changed K/V.
  kStatLayerInputs = 1u << 7,
};

// A pair of layers whose attention inputs' cross moment is wanted (order does not matter).
using LayerPair = std::pair<int, int>;

struct LayerKvStatistics {
  // Row-major symmetric [KV d, KV d] sums over all calibration tokens, in double; empty when
  // not collected. Channel index = kv_head * d + dim.
  std::vector<double> key_pre_rope, key_post_rope, value;
  std::vector<double> query_energy;  // [H d] sums of squares; empty when not collected
  std::vector<HeadNormAttention>
      norm_attention;  // [KV] sums over windows; empty when not collected
  // Extremes over all calibration tokens (empty when not collected). Channel = kv_head * d + c.
  std::vector<float> key_min, key_max, value_min, value_max;  // post-RoPE keys, values: [KV d]
  // Largest norm of rotary pair (c, c + d/2), before RoPE (a rotation keeps it): queries
  // [H d/2] (head h, pair c at h * d/2 + c), keys [KV d/2].
  std::vector<float> query_pair_max, key_pair_max;
  // Adds `other` (the same layer seen by another collector) into this.
  void Merge(const LayerKvStatistics& other);
};

struct KvStatistics {
  unsigned collected = 0;  // StatisticBits
  std::int64_t tokens = 0;
  std::int64_t windows = 0;  // sequences seen (the norm_attention sums are over these)
  std::int64_t kv_heads = 0, head_dim = 0;
  std::vector<LayerKvStatistics> layers;
  // kStatLayerInputs: for each pair (a <= b), the sum over calibration tokens of ĥ_a ĥ_b^T with
  // ĥ = [h; 1] (h after input_layernorm, the 1 carries biases): row-major [D + 1, D + 1].
  std::int64_t hidden = 0;  // D
  std::map<LayerPair, std::vector<double>> input_moments;
  // Sum of ĥ_a ĥ_b^T for layers a, b in either order; throws Error when it was not collected.
  std::vector<double> InputMoment(int a, int b) const;
  std::int64_t dim() const { return kv_heads * head_dim; }
  // Adds `other` (same model, same statistics) into this; used to join per-thread collectors.
  void Merge(const KvStatistics& other);
};

// Every layer's ScoreRule as `config`'s runtime forms its scores.
std::vector<ScoreRule> ScoreRulesOf(const ModelConfig& config);

class KvStatisticsCollector : public LayerObserver {
 public:
  KvStatisticsCollector(unsigned statistics, int layers, std::int64_t kv_heads,
                        std::int64_t head_dim, std::int64_t hidden = 0,
                        std::vector<LayerPair> input_pairs = {});
  // Layers with different KV-head counts (Nemotron-NAS): entry l = layer l's.
  void SetLayerKvHeads(std::vector<std::int64_t> kv_heads) {
    layer_kv_heads_ = std::move(kv_heads);
  }
  // How each layer forms its scores, for kStatNormAttention (entry l = layer l's; empty: every
  // layer head_dim^-1/2, no cap, no window).
  void SetScoreRules(std::vector<ScoreRule> rules) { score_rules_ = std::move(rules); }
  unsigned Wants(int layer) const override;
  void Observe(const AttentionCapture& capture) override;
  // The second moments are summed into their lower triangles batch by batch and mirrored when
  // read: here, for every layer, and in TakeLayer.
  const KvStatistics& statistics();
  // Moves out `layer`'s statistics once every batch has passed it (a layer sweep consumes
  // each layer's statistics and frees them before the next).
  LayerKvStatistics TakeLayer(int layer);

 private:
  void MirrorMoments(std::size_t layer);  // the upper triangles from the lower, once summed

  KvStatistics stats_;
  std::vector<bool> lower_only_;  // per layer: moments summed since their last mirroring
  std::vector<std::int64_t> layer_kv_heads_;  // per-layer KV heads, when layers differ
  std::vector<ScoreRule> score_rules_;        // per layer; empty: the default rule
  std::vector<float> scratch_;          // one batch's X^T X before it joins the double accumulators
  std::vector<LayerPair> input_pairs_;  // (a <= b), sorted
  // h of (sequence, layer) for layers paired with a later one, until that later layer arrives.
  std::map<std::pair<std::int64_t, int>, std::vector<float>> pending_;
  std::map<int, int> last_partner_;  // layer -> the last later layer it is paired with
  int count_layer_ = 0;              // the layer whose captures count tokens
};

}  // namespace kvfold
