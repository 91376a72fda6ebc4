#include "runtime_check/kv_eviction.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "formats/error.h"
#include "formats/eviction_table.h"
#include "runtime_check/spec_text.h"

namespace kvfold {
namespace {

constexpr const char* kWhere = "--kv-cache";

struct PolicyName {
  EvictPolicy policy;
  const char* name;
};
constexpr PolicyName kPolicies[] = {
    {EvictPolicy::kL2Low, "l2-low"},
    {EvictPolicy::kL2High, "l2-high"},
    {EvictPolicy::kRandom, "random"},
    {EvictPolicy::kRecent, "recent"},
    {EvictPolicy::kAttentionOracle, "attention-oracle"},
    {EvictPolicy::kTable, "table"},
};

// SplitMix64: a tiny, well-mixed generator; seeds derived from it are independent of batching.
std::uint64_t Mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t Next() { return state_ = Mix(state_); }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  std::size_t Below(std::size_t n) {
    return static_cast<std::size_t>(Uniform() * static_cast<double>(n));
  }

 private:
  std::uint64_t state_;
};

double KeyNorm(const HeadTensors& x, std::int64_t j) {
  const float* k = x.keys + j * x.key_stride;
  double s = 0;
  for (std::int64_t c = 0; c < x.head_dim; ++c) s += double(k[c]) * k[c];
  return std::sqrt(s);
}

// Softmax over `keys` (token indices) of query head h at token i, added into acc[key].
void AccumulateAttention(const HeadTensors& x, std::int64_t i,
                         const std::vector<std::int64_t>& keys, std::vector<double>& acc,
                         std::vector<double>& scratch) {
  scratch.resize(keys.size());
  for (std::int64_t h = 0; h < x.group; ++h) {
    const float* q = x.queries + i * x.query_stride + h * x.head_dim;
    double m = -INFINITY;
    for (std::size_t n = 0; n < keys.size(); ++n) {
      const float* k = x.keys + keys[n] * x.key_stride;
      double s = 0;
      for (std::int64_t c = 0; c < x.head_dim; ++c) s += double(q[c]) * k[c];
      scratch[n] = s * x.scale;
      m = std::max(m, scratch[n]);
    }
    double sum = 0;
    for (double& s : scratch) sum += (s = std::exp(s - m));
    for (std::size_t n = 0; n < keys.size(); ++n)
      acc[static_cast<std::size_t>(keys[n])] += scratch[n] / sum;
  }
}

// Keep score per token (higher = kept first) for policies that rank without attention.
double KeepScore(EvictPolicy policy, const HeadTensors& x, std::int64_t j, Rng& rng) {
  switch (policy) {
    case EvictPolicy::kL2Low:
      return -KeyNorm(x, j);
    case EvictPolicy::kL2High:
      return KeyNorm(x, j);
    case EvictPolicy::kRecent:
      return static_cast<double>(j);
    case EvictPolicy::kRandom:
      return rng.Uniform();
    default:
      Fail(kWhere, "internal: no static score for this policy");
  }
}

void PrefillVisibility(const HeadEviction& e, const HeadTensors& x, std::uint8_t* visible) {
  const std::int64_t T = x.tokens, P = std::min(e.prefix, T);
  const auto keep = static_cast<std::int64_t>(std::llround(e.keep * static_cast<double>(P)));
  std::vector<double> score(static_cast<std::size_t>(P));
  if (e.policy == EvictPolicy::kAttentionOracle) {
    std::vector<std::int64_t> seen;
    std::vector<double> scratch;
    for (std::int64_t i = 0; i < P; ++i) {
      seen.push_back(i);
      AccumulateAttention(x, i, seen, score, scratch);
    }
    if (e.oracle_mean) {
      for (std::int64_t j = 0; j < P; ++j)
        score[static_cast<std::size_t>(j)] /= static_cast<double>(P - j);
    }
  } else {
    Rng rng(e.seed);
    for (std::int64_t j = 0; j < P; ++j)
      score[static_cast<std::size_t>(j)] = KeepScore(e.policy, x, j, rng);
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(P));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    return score[static_cast<std::size_t>(a)] > score[static_cast<std::size_t>(b)];
  });
  std::vector<std::uint8_t> kept(static_cast<std::size_t>(P), 0);
  for (std::int64_t n = 0; n < std::min(keep, P); ++n)
    kept[static_cast<std::size_t>(order[static_cast<std::size_t>(n)])] = 1;
  for (std::int64_t i = 0; i < T; ++i) {
    std::uint8_t* row = visible + i * T;
    for (std::int64_t j = 0; j < T; ++j) {
      row[j] = j <= i && (i < P || j >= P || kept[static_cast<std::size_t>(j)]) ? 1 : 0;
    }
  }
}

void StreamVisibility(const HeadEviction& e, const HeadTensors& x, std::uint8_t* visible) {
  const std::int64_t T = x.tokens;
  std::fill(visible, visible + T * T, std::uint8_t{0});
  std::vector<std::int64_t> cache;  // token indices, oldest first
  std::vector<double> score(static_cast<std::size_t>(T), 0.0),
      received(static_cast<std::size_t>(T), 0.0), scratch;
  Rng rng(e.seed);
  const bool oracle = e.policy == EvictPolicy::kAttentionOracle;
  for (std::int64_t i = 0; i < T; ++i) {
    cache.push_back(i);
    if (oracle) {
      AccumulateAttention(x, i, cache, received, scratch);
      for (std::int64_t j : cache) {
        score[static_cast<std::size_t>(j)] = received[static_cast<std::size_t>(j)] /
                                             (e.oracle_mean ? static_cast<double>(i - j + 1) : 1.0);
      }
    } else if (e.policy != EvictPolicy::kRandom) {
      score[static_cast<std::size_t>(i)] = KeepScore(e.policy, x, i, rng);
    }
    for (std::int64_t j : cache) visible[i * T + j] = 1;
    const std::int64_t capacity = e.max_cache > 0 ? e.max_cache : RatioCapacity(e.keep, i + 1);
    while (static_cast<std::int64_t>(cache.size()) > capacity) {
      std::size_t victim = 0;
      if (e.policy == EvictPolicy::kRandom) {
        victim = rng.Below(cache.size());
      } else {
        for (std::size_t n = 1; n < cache.size(); ++n) {  // strict <: the older token loses ties
          if (score[static_cast<std::size_t>(cache[n])] <
              score[static_cast<std::size_t>(cache[victim])])
            victim = n;
        }
      }
      cache.erase(cache.begin() + static_cast<std::ptrdiff_t>(victim));
    }
  }
}

}  // namespace

const char* EvictPolicyName(EvictPolicy policy) {
  for (const auto& p : kPolicies) {
    if (p.policy == policy) return p.name;
  }
  return "?";
}

std::string EvictionSpec::Text() const {
  std::ostringstream o;
  o << "evict<policy=" << EvictPolicyName(policy)
    << ",regime=" << (regime == EvictRegime::kPrefill ? "prefill" : "stream");
  if (max_cache > 0) {
    o << ",max=" << max_cache;
  } else if (policy != EvictPolicy::kTable) {
    o << ",keep=" << keep;
  }
  if (prefix > 0) o << ",prefix=" << prefix;
  if (!skip_layers.empty()) {
    o << ",skip=";
    for (std::size_t i = 0; i < skip_layers.size(); ++i) o << (i ? "," : "") << skip_layers[i];
  }
  if (policy == EvictPolicy::kRandom) o << ",seed=" << seed;
  if (policy == EvictPolicy::kAttentionOracle) o << ",score=" << (oracle_mean ? "mean" : "sum");
  if (!table.empty()) o << ",table=" << table;
  return o.str() + ">";
}

EvictionSpec ParseEvictionSpec(const std::string& text) {
  EvictionSpec spec;
  bool has_keep = false, has_score = false;
  for (const auto& [key, value] : SpecItems(text, "evict")) {
    if (key == "policy") {
      bool found = false;
      for (const auto& p : kPolicies) {
        if (value == p.name) spec.policy = p.policy, found = true;
      }
      if (!found)
        Fail(kWhere, "policy=" + value +
                         " is not one of l2-low|l2-high|random|recent|attention-oracle|table");
    } else if (key == "regime") {
      if (value == "prefill")
        spec.regime = EvictRegime::kPrefill;
      else if (value == "stream")
        spec.regime = EvictRegime::kStream;
      else
        Fail(kWhere, "regime=" + value + " is not one of prefill|stream");
    } else if (key == "keep") {
      spec.keep = SpecFraction(key, value, false);
      has_keep = true;
    } else if (key == "max") {
      spec.max_cache = SpecInt(key, value, 1, INT64_MAX);
    } else if (key == "prefix") {
      spec.prefix = SpecInt(key, value, 1, INT64_MAX);
    } else if (key == "seed") {
      spec.seed = static_cast<std::uint64_t>(SpecInt(key, value, 0, INT64_MAX));
    } else if (key == "skip") {
      spec.skip_layers = SpecIntList(key, value);
    } else if (key == "table") {
      spec.table = value;
    } else if (key == "score") {
      if (value != "sum" && value != "mean")
        Fail(kWhere, "score=" + value + " is not one of sum|mean");
      spec.oracle_mean = value == "mean";
      has_score = true;
    } else {
      Fail(kWhere, "unknown key '" + key +
                       "' (policy, regime, keep, max, prefix, skip, seed, score, table)");
    }
  }
  if (spec.max_cache > 0 && spec.regime != EvictRegime::kStream)
    Fail(kWhere, "max= applies to regime=stream only");
  if (spec.max_cache > 0 && has_keep) Fail(kWhere, "give keep= or max=, not both");
  if (spec.prefix > 0 && spec.regime != EvictRegime::kPrefill)
    Fail(kWhere, "prefix= applies to regime=prefill only");
  if (spec.policy == EvictPolicy::kTable && has_keep)
    Fail(kWhere, "policy=table takes each head's keep ratio from the table");
  if (spec.policy != EvictPolicy::kTable && !spec.table.empty())
    Fail(kWhere, "table= needs policy=table");
  if (has_score && spec.policy != EvictPolicy::kAttentionOracle)
    Fail(kWhere, "score= applies to policy=attention-oracle");
  return spec;
}

std::int64_t PrefixLength(const EvictionSpec& spec, std::int64_t tokens) {
  return spec.prefix > 0 ? std::min(spec.prefix, tokens) : tokens / 2;
}

std::int64_t CachedTokens(const HeadEviction& e, std::int64_t T, std::int64_t i) {
  if (e.regime == EvictRegime::kPrefill) {
    const std::int64_t P = std::min(e.prefix, T);
    if (i < P) return i + 1;
    return std::min(P, static_cast<std::int64_t>(std::llround(e.keep * static_cast<double>(P)))) +
           (i - P + 1);
  }
  // Stream: the cache after step i - 1, plus token i.
  if (i == 0) return 1;
  const std::int64_t capacity = e.max_cache > 0 ? e.max_cache : RatioCapacity(e.keep, i);
  return std::min(i, capacity) + 1;
}

void EvictionVisibility(const HeadEviction& e, const HeadTensors& x, std::uint8_t* visible) {
  if (e.policy == EvictPolicy::kTable) Fail(kWhere, "internal: table policy not resolved per head");
  if (e.regime == EvictRegime::kPrefill) {
    PrefillVisibility(e, x, visible);
  } else {
    StreamVisibility(e, x, visible);
  }
}

EvictionCachePolicy::EvictionCachePolicy(const EvictionSpec& spec, const ModelConfig& config)
    : spec_(spec) {
  const std::int64_t layers = config.num_hidden_layers;
  for (std::int64_t l = 0; l <= layers; ++l) first_head_.push_back(config.KvHeadIndex(l, 0));
  heads_.assign(static_cast<std::size_t>(config.TotalKvHeads()), HeadSetting{false, spec.keep});
  for (int l : spec.skip_layers) {
    if (l >= layers)
      Fail(kWhere, "skip layer " + std::to_string(l) + " does not exist (the model has " +
                       std::to_string(layers) + ")");
    for (std::int64_t g = 0; g < config.KvHeads(l); ++g)
      heads_[static_cast<std::size_t>(config.KvHeadIndex(l, g))].skip = true;
  }
  if (spec.policy == EvictPolicy::kTable) {
    if (spec.table.empty())
      Fail(kWhere, "policy=table needs table=PATH (or a model folder with " +
                       std::string(kEvictionTableJson) + ")");
    if (config.PerLayerKvHeads())
      Fail(spec.table,
           "an eviction table holds one KV-head count for every layer; this model's "
           "layers have different counts");
    const EvictionTable table = ReadEvictionTable(spec.table);
    if (table.layers != layers || table.kv_heads != config.num_key_value_heads) {
      Fail(spec.table, "table is for " + std::to_string(table.layers) + " layers x " +
                           std::to_string(table.kv_heads) + " KV heads, the model has " +
                           std::to_string(layers) + " x " +
                           std::to_string(config.num_key_value_heads));
    }
    for (std::int64_t l = 0; l < layers; ++l) {
      for (std::int64_t g = 0; g < config.num_key_value_heads; ++g) {
        HeadSetting& h = heads_[static_cast<std::size_t>(config.KvHeadIndex(l, g))];
        h.skip = h.skip || table.at(l, g).skip;
        h.keep = table.at(l, g).keep;
      }
    }
  }
}

bool EvictionCachePolicy::Untouched(int layer) const {
  const std::int64_t heads = first_head_[static_cast<std::size_t>(layer) + 1] -
                             first_head_[static_cast<std::size_t>(layer)];
  for (std::int64_t g = 0; g < heads; ++g) {
    const HeadSetting& h = Head(layer, g);
    if (!h.skip && (h.keep < 1.0 || spec_.max_cache > 0)) return false;
  }
  return true;
}

void EvictionCachePolicy::HeadCache(int layer, const float* qkv, const QkvLayout& L, std::int64_t b,
                                    std::int64_t g, std::int64_t sequence,
                                    const HeadCacheOut& out) const {
  std::uint8_t* visible = out.codes;
  const std::int64_t T = L.tokens, d = L.head_dim, group = L.heads / L.kv_heads;
  const HeadSetting& setting = Head(layer, g);
  if (setting.skip) {
    for (std::int64_t i = 0; i < T; ++i) {
      for (std::int64_t j = 0; j < T; ++j) visible[i * T + j] = j <= i ? 1 : 0;
    }
    return;
  }
  const float* rows = qkv + b * T * L.row();
  HeadTensors x;
  x.tokens = T;
  x.head_dim = d;
  x.group = group;
  x.keys = rows + (L.heads + g) * d;
  x.key_stride = L.row();
  x.queries = rows + g * group * d;
  x.query_stride = L.row();
  x.scale = static_cast<float>(L.ScoreScale());
  HeadEviction e;
  e.policy = spec_.policy == EvictPolicy::kTable ? EvictPolicy::kL2Low : spec_.policy;
  e.regime = spec_.regime;
  e.keep = setting.keep;
  e.max_cache = spec_.max_cache;
  e.prefix = PrefixLength(spec_, T);
  e.oracle_mean = spec_.oracle_mean;
  e.seed = Mix(Mix(Mix(Mix(spec_.seed) ^ static_cast<std::uint64_t>(layer)) ^
                   static_cast<std::uint64_t>(sequence)) ^
               static_cast<std::uint64_t>(g));
  EvictionVisibility(e, x, visible);
}

double EvictionCachePolicy::AverageBits(std::int64_t T, std::int64_t from, std::int64_t) const {
  double bits = 0, full = 0;
  for (std::size_t h = 0; h < heads_.size(); ++h) {
    HeadEviction e;
    e.regime = spec_.regime;
    e.keep = heads_[h].skip ? 1.0 : heads_[h].keep;
    e.max_cache = heads_[h].skip ? 0 : spec_.max_cache;
    e.prefix = PrefixLength(spec_, T);
    for (std::int64_t i = from; i < T; ++i) {
      bits += 16.0 * static_cast<double>(CachedTokens(e, T, i));
      full += static_cast<double>(i + 1);
    }
  }
  return bits / full;
}

}  // namespace kvfold
