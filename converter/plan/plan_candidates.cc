#include "converter/plan/plan_candidates.h"

#include <algorithm>

namespace kvfold {

std::vector<PlanStructure> PlanStructures(const ModelConfig& c) {
  std::vector<PlanStructure> out = {{"", "none", true}};
  if (c.qk_norm) return out;  // gqa-svd and mlkv refuse per-head q/k norms
  const std::int64_t kv = c.num_key_value_heads, layers = c.num_hidden_layers;
  for (std::int64_t divisor : {2, 4, 8}) {
    if (kv % divisor == 0)
      out.push_back({"gqa-svd<kv-heads=" + std::to_string(kv / divisor) + ">", "heads", true});
  }
  // mlkv runs in the whole-model sweep: kv-scales cannot follow it there, and gqa-svd's refit
  // cannot run before it (refit=none says so in the text that is recorded). The runtime has no
  // cache policies for layers that share K/V, so these take the full cache only.
  for (std::int64_t divisor : {2, 4}) {
    if (layers / divisor >= 1 && layers / divisor < layers) {
      out.push_back({"mlkv<kv-layers=" + std::to_string(layers / divisor) + ">", "cross-layer",
                     false, false});
    }
  }
  if (kv % 2 == 0 && layers >= 2) {
    out.push_back({"gqa-svd<kv-heads=" + std::to_string(kv / 2) +
                       ",refit=none>,mlkv<kv-layers=" + std::to_string(layers / 2) + ">",
                   "heads+cross-layer", false, false});
  }
  return out;
}

std::vector<PlanCache> PlanCaches() {
  std::vector<PlanCache> out = {{"", "none", false}, {"quant<scheme=fp8>", "quant", true}};
  for (const char* scheme : {"rtn", "kivi"}) {
    const std::vector<int> bits =
        std::string(scheme) == "rtn" ? std::vector<int>{8, 4, 3, 2} : std::vector<int>{4, 2};
    for (int key : bits) {
      for (int value : bits) {
        out.push_back({std::string("quant<scheme=") + scheme + ",key-bits=" + std::to_string(key) +
                           ",value-bits=" + std::to_string(value) + ">",
                       "quant", false, std::min(key, value) <= 3});
      }
    }
  }
  out.push_back({"quant<scheme=mikv,bits=4,keep=0.2>", "quant", false});
  out.push_back({"quant<scheme=mikv,bits=2,keep=0.2>", "quant", false});
  for (const char* keep : {"0.5", "0.25"})
    out.push_back({std::string("evict<policy=l2-low,keep=") + keep + ">", "evict", false});
  return out;
}

namespace {

// "0,3,5": a protect list in ascending order (the canonical form).
std::string LayerList(std::vector<std::int64_t> layers) {
  std::sort(layers.begin(), layers.end());
  std::string out;
  for (std::int64_t l : layers) out += (out.empty() ? "" : ",") + std::to_string(l);
  return out;
}

}  // namespace

std::string LayerProbeCache(std::int64_t layers, std::int64_t layer) {
  std::vector<std::int64_t> others;
  for (std::int64_t l = 0; l < layers; ++l) {
    if (l != layer) others.push_back(l);
  }
  return "quant<scheme=rtn,key-bits=2,value-bits=2" +
         (others.empty() ? "" : ",protect=" + LayerList(others)) + ">";
}

std::vector<PlanCache> ProtectedCaches(const std::vector<PlanCache>& caches,
                                       const std::vector<std::int64_t>& by_sensitivity) {
  std::vector<PlanCache> out;
  for (std::size_t count = 1; count <= 2 && count < by_sensitivity.size(); ++count) {
    const std::vector<std::int64_t> top(
        by_sensitivity.begin(), by_sensitivity.begin() + static_cast<std::ptrdiff_t>(count));
    for (const PlanCache& c : caches) {
      if (!c.low_bits) continue;
      PlanCache p = c;
      p.spec.insert(p.spec.size() - 1, ",protect=" + LayerList(top));
      p.low_bits = false;
      out.push_back(p);
    }
  }
  return out;
}

PlanCandidate Combine(const std::vector<PlanStructure>& structures, std::size_t s,
                      const std::vector<PlanCache>& caches, std::size_t c) {
  const PlanStructure& st = structures[s];
  const PlanCache& ca = caches[c];
  PlanCandidate k;
  k.structure = s;
  k.cache = c;
  k.passes = st.passes;
  if (ca.needs_fp8_scales) k.passes += std::string(k.passes.empty() ? "" : ",") + "kv-scales";
  k.kv_cache = ca.spec;
  if (st.family == "none") {
    k.family = ca.family;
  } else {
    k.family = ca.family == "none" ? st.family : st.family + "+" + ca.family;
  }
  return k;
}

}  // namespace kvfold
