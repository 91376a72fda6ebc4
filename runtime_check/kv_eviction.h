// KV-cache eviction at decode time (issue 6; L2-norm policy from arXiv 2406.11430): which cached
// keys each query still reads, per (layer, sequence, KV head). LibTorch-free, so the decisions
// can be checked by hand on small cases.
//
// Regimes (both as in the paper):
//   prefill  the first `prefix` tokens are prefilled with the full cache, then the cache is
//            compressed once to round(keep * prefix) of them; every later token is cached and
//            kept. Queries before `prefix` are unaffected.
//   stream   decoding token by token from the start; after token i has been cached and has
//            attended, the cache is trimmed to its capacity: `max` tokens when given, else
//            ceil(keep * (i + 1)) (the cache never holds more than `keep` of the tokens seen).
//            Token i always attends to the cache plus itself.
// Policies rank what to keep:
//   l2-low   lowest key L2 norm (the paper)      l2-high  highest key L2 norm (the paper's control)
//   random   uniform, seeded per (seed, layer, sequence, head)
//   recent   the newest tokens (a sliding window)
//   attention-oracle  the highest attention received so far, accumulated over the queries and
//            summed over the query heads that read the KV head (H2O; prefill: from the prefill
//            queries, so its drop order is kv-norm-analysis's ideal one). score=mean divides by
//            the number of queries since the token was cached, so a newcomer is not behind by age.
//   table    l2-low with each head's keep ratio and skip flag from a kv-norm-analysis table
// Ties go to the older token (kept first under a keep ranking, evicted first in streaming).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/model_config.h"
#include "runtime_check/kv_cache_policy.h"

namespace kvfold {

enum class EvictPolicy { kL2Low, kL2High, kRandom, kRecent, kAttentionOracle, kTable };
enum class EvictRegime { kPrefill, kStream };

struct EvictionSpec {
  EvictPolicy policy = EvictPolicy::kL2Low;
  EvictRegime regime = EvictRegime::kPrefill;
  double keep = 0.5;             // fraction kept, in (0, 1]
  std::int64_t max_cache = 0;    // stream: fixed capacity in tokens (0 = use keep)
  std::int64_t prefix = 0;       // prefill: tokens prefilled (0 = half the sequence)
  std::vector<int> skip_layers;  // layers that keep their full cache
  std::uint64_t seed = 0;        // policy=random
  bool oracle_mean = false;      // policy=attention-oracle: score=mean instead of sum
  std::string table;             // policy=table: path of kv_eviction_policy.json
  std::string Text() const;      // canonical spec text
};

const char* EvictPolicyName(EvictPolicy policy);

// Parses "evict<policy=l2-low,keep=0.5,skip=0,1,regime=prefill|stream,max=N,prefix=N,seed=N,
// table=PATH>". Throws Error("--kv-cache: ...") naming the bad part.
EvictionSpec ParseEvictionSpec(const std::string& text);

// The prefix length a prefill-regime spec uses for sequences of T tokens.
std::int64_t PrefixLength(const EvictionSpec& spec, std::int64_t tokens);

// One head's eviction problem. Keys of token j: keys + j * key_stride (head_dim floats); query
// head h (h < group) of token i: queries + i * query_stride + h * head_dim.
struct HeadEviction {
  EvictPolicy policy = EvictPolicy::kL2Low;  // never kTable here (resolved per head)
  EvictRegime regime = EvictRegime::kPrefill;
  double keep = 1.0;
  std::int64_t max_cache = 0;
  std::int64_t prefix = 0;
  std::uint64_t seed = 0;  // already mixed with layer, sequence and head
  bool oracle_mean = false;
};

struct HeadTensors {
  std::int64_t tokens = 0, head_dim = 0, group = 1;
  const float* keys = nullptr;
  std::int64_t key_stride = 0;
  const float* queries = nullptr;  // needed by attention-oracle only
  std::int64_t query_stride = 0;
  float scale = 1.0f;  // softmax scale (1/sqrt(d))
};

// visible[i * T + j] = 1 when query i reads key j (causal, after the policy's evictions).
void EvictionVisibility(const HeadEviction& eviction, const HeadTensors& head,
                        std::uint8_t* visible);

// Tokens in the cache that query i reads (T tokens, the rules above), without any key data.
std::int64_t CachedTokens(const HeadEviction& eviction, std::int64_t tokens, std::int64_t i);

// The cache policy for a whole model: the spec resolved per (layer, head), skip layers untouched.
class EvictionCachePolicy : public KvCachePolicy {
 public:
  // Reads spec.table when policy=table; throws Error when it does not fit `config`.
  EvictionCachePolicy(const EvictionSpec& spec, const ModelConfig& config);
  bool Untouched(int layer) const override;
  void HeadCache(int layer, const float* qkv, const QkvLayout& layout, std::int64_t b,
                 std::int64_t g, std::int64_t sequence, const HeadCacheOut& out) const override;
  double AverageBits(std::int64_t tokens, std::int64_t from, std::int64_t head_dim) const override;

 private:
  struct HeadSetting {
    bool skip = false;
    double keep = 1.0;
  };
  EvictionSpec spec_;
  std::vector<std::int64_t> first_head_;  // per layer: its first KV head's index in heads_
  std::vector<HeadSetting> heads_;        // [ModelConfig::KvHeadIndex(layer, g)]
  const HeadSetting& Head(std::int64_t layer, std::int64_t g) const {
    return heads_[static_cast<std::size_t>(first_head_[static_cast<std::size_t>(layer)] + g)];
  }
};

}  // namespace kvfold
