// The planner's search space (kvfold plan, docs/plan.md): every combination of a weight
// conversion kvfold can make (KV heads by gqa-svd, KV layers by mlkv, both) and a decode-time
// cache policy (FP8, RTN and KIVI bits for keys and values separately, MiKV, L2-norm eviction),
// each with the KV bytes it keeps.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "converter/passes/pass.h"
#include "formats/model_config.h"

namespace kvfold {

// The runtime a plan is for (kvfold plan --runtime): what it serves decides the candidates, the
// bytes, the artifact and the command that runs it.
//   kvfold:    everything kvfold's validation runtime runs (research cache policies too)
//   llama.cpp: KV heads (uniform or per layer, GGUF deci) x llama.cpp's K and V cache types
//   vllm:      KV heads (uniform or per layer, DeciLM) x fp8 (kv-scales, per tensor) or 16 bits
enum class PlanRuntime { kKvfold, kLlamaCpp, kVllm };
PlanRuntime ParsePlanRuntime(const std::string& text, const std::string& where);
const char* PlanRuntimeName(PlanRuntime runtime);

// A conversion of the weights: the passes that make it ("" = the model as it is).
struct PlanStructure {
  PipelineSpec passes;         // empty: the model as it is
  std::string family;          // "none", "heads", "cross-layer" or "heads+cross-layer"
  bool fp8_scales = false;     // kv-scales can follow these passes (FP8 caches are possible)
  bool cache_policies = true;  // the runtime applies cache policies to the result
};

// A decode-time cache policy: a --kv-cache spec ("" = the full 16-bit cache).
struct PlanCache {
  std::string spec;
  std::string family;  // "none", "quant" or "evict"
  bool needs_fp8_scales = false;
  bool low_bits =
      false;  // RTN or KIVI with keys or values at 3 bits or fewer: per-layer protection pays
  // llama.cpp and vLLM: the runtime's names for the cache types.
  std::string cache_k = {}, cache_v = {};
};

struct PlanCandidate {
  std::size_t structure = 0, cache = 0;  // indexes into the two lists
  PipelineSpec passes;                   // what to convert with (empty: nothing)
  std::string kv_cache;                  // --kv-cache spec ("" = full cache)
  std::string family;                    // methods combined, e.g. "heads", "quant", "heads+quant"
  double bytes_fraction = 1;             // KV bytes per cached token over the source's 16-bit cache
  std::vector<std::int64_t> kv_heads;    // per layer, after the conversion
  std::string cache_k, cache_v;          // as PlanCache's
  double kl = std::numeric_limits<double>::quiet_NaN();        // on every scoring window
  double quick_kl = std::numeric_limits<double>::quiet_NaN();  // on the pruning windows
  bool frontier = false;  // no scored candidate is both smaller (or equal) and better
};

// A conversion the planner would try but one of its passes refuses on the model.
struct RefusedStructure {
  std::string passes;  // the pipeline's text
  std::string reason;  // "<pass>: <Pass::Unsupported's answer>"
};

// The conversions tried for `c`: the model, gqa-svd to 1/2, 1/4 and 1/8 of the KV heads, mlkv to
// 1/2 and 1/4 of the layers, and 1/2 of each together; of those, the ones whose every pass runs
// on `c` (each pass says: Pass::Unsupported; e.g. no fold for per-head q/k norms, no mlkv on a
// sliding window).
// For llama.cpp and vLLM: the model, gqa-svd to 1/2, 1/4, 1/8 on every layer, and totals of
// 7/8, 6/8, ... 1/8 of the heads allocated per layer (kv-heads=auto); no cross-layer sharing
// (neither runs it).
// The refused ones go to `refused` when given.
std::vector<PlanStructure> PlanStructures(const ModelConfig& c,
                                          PlanRuntime runtime = PlanRuntime::kKvfold,
                                          std::vector<RefusedStructure>* refused = nullptr);
// `structures` (PlanStructures' answer: they run on `c`) with, after them, each conversion (KV
// heads, cross-layer sharing, both: every structure but the model itself) followed by heal, as
// family "healed " + its family (plan --heal), where heal runs on `c` (where it does not, to
// `refused` when given). kv-scales follows a healed structure where it follows the structure.
std::vector<PlanStructure> WithHealedStructures(std::vector<PlanStructure> structures,
                                                const ModelConfig& c,
                                                std::vector<RefusedStructure>* refused = nullptr);

// The cache policies tried: full, FP8, RTN and KIVI with key and value bits chosen apart, MiKV
// and L2-norm eviction.
// llama.cpp: ggml<k=K,v=V> for K at least as many bits as V among f16, q8_0, q5_1, q5_0, q4_1,
// q4_0, iq4_nl (the block types only when 32 divides head_dim); vLLM: 16 bits and fp8.
std::vector<PlanCache> PlanCaches(PlanRuntime runtime = PlanRuntime::kKvfold,
                                  std::int64_t head_dim = 0);

// How a candidate is served: the artifact convert writes ("gguf" or "hf"), the cache types in
// the runtime's own names (empty for kvfold's policies) and the command that runs `output`.
struct PlanServing {
  std::string artifact, cache_k, cache_v, serve;
};
PlanServing ServingOf(PlanRuntime runtime, const PlanCandidate& candidate,
                      const std::string& output);

// Per-layer precision by measured sensitivity: the cache spec that quantizes layer `layer` alone
// at the lowest bits tried (every other layer protected), whose KL ranks the layers.
std::string LayerProbeCache(std::int64_t layers, std::int64_t layer);
// For each low-bit RTN/KIVI cache (keys or values at 3 bits or fewer), the same cache with the
// most sensitive layer, and the two most sensitive, left at 16 bits (`by_sensitivity`: layers,
// most sensitive first).
std::vector<PlanCache> ProtectedCaches(const std::vector<PlanCache>& caches,
                                       const std::vector<std::int64_t>& by_sensitivity);

// `passes` followed by kv-scales: what an FP8 cache needs written beside the weights.
PipelineSpec WithKvScales(const PipelineSpec& passes);

// Passes text and family of one combination (FP8 adds kv-scales to the passes).
PlanCandidate Combine(const std::vector<PlanStructure>& structures, std::size_t s,
                      const std::vector<PlanCache>& caches, std::size_t c);

}  // namespace kvfold
