#include "runtime_check/cache_policy_spec.h"

#include "formats/error.h"
#include "formats/eviction_table.h"
#include "formats/kv_mixed_table.h"
#include "formats/stored_layout.h"
#include "runtime_check/kv_eviction.h"
#include "runtime_check/kv_quant.h"

namespace kvfold {
namespace {

// vLLM's static FP8 scales from the checkpoint, one per (layer, KV head): a [1] tensor applies
// to every head, a [KV, 1, 1] (compressed-tensors attn_head) tensor per head.
std::vector<float> CheckpointFp8Scales(const Checkpoint& ck, TensorRole which) {
  const std::int64_t layers = ck.config.num_hidden_layers;
  std::vector<float> out;
  for (std::int64_t l = 0; l < layers; ++l) {
    const std::int64_t kv = ck.config.KvHeads(l);
    const std::string name = HfTensorName({which, static_cast<int>(l)});
    if (ck.tensors.Find(name) == nullptr) {
      Fail(ck.dir, "has no " + name + " (scheme=fp8 reads the scales the kv-scales pass writes)");
    }
    const std::vector<float> s = ck.tensors.ReadF32(name);
    if (s.size() != 1 && s.size() != static_cast<std::size_t>(kv)) {
      Fail(ck.dir, name + " has " + std::to_string(s.size()) + " values; expected 1 or " +
                       std::to_string(kv));
    }
    for (std::int64_t g = 0; g < kv; ++g) {
      const float v = s[s.size() == 1 ? 0 : static_cast<std::size_t>(g)];
      if (!(v > 0)) Fail(ck.dir, name + " is not a positive scale");
      out.push_back(v);
    }
  }
  return out;
}

}  // namespace

CachePolicySpec MakeCachePolicy(const std::string& text, const Checkpoint& ck,
                                std::int64_t window) {
  CachePolicySpec out;
  if (text.rfind("evict<", 0) == 0) {
    EvictionSpec spec = ParseEvictionSpec(text);
    if (spec.policy == EvictPolicy::kTable && spec.table.empty())
      spec.table = ck.dir + "/" + kEvictionTableJson;
    out.policy = std::make_unique<EvictionCachePolicy>(spec, ck.config);
    out.text = spec.Text();
    out.scored_from = PrefixLength(spec, window);
    return out;
  }
  if (text.rfind("quant<", 0) == 0 || text.rfind("ggml<", 0) == 0) {
    QuantSpec spec = ParseQuantSpec(text);
    QuantCalibration calibration;
    if (spec.scheme == QuantScheme::kFp8) {
      calibration.k_scale = CheckpointFp8Scales(ck, TensorRole::kKScale);
      calibration.v_scale = CheckpointFp8Scales(ck, TensorRole::kVScale);
    }
    if (!spec.table.empty()) {
      const KvMixedTable t = ReadKvMixedTable(spec.table);
      if (ck.config.PerLayerKvHeads())
        Fail(spec.table,
             "a kv-mixed table holds one KV-head count for every layer; this "
             "model's layers have different counts");
      if (t.layers != ck.config.num_hidden_layers || t.kv_heads != ck.config.num_key_value_heads ||
          t.head_dim != ck.config.head_dim) {
        Fail(spec.table,
             "table is for another model geometry (layers, KV heads or head_dim differ)");
      }
      if (t.value_axis != "token")
        Fail(spec.table, "value_axis " + t.value_axis + " is not supported (token)");
      spec.keep = t.keep;
      spec.recent = t.recent;
      spec.hi_bits = t.hi_bits;
      spec.key_bits = t.key_bits;
      spec.value_bits = t.value_bits;
      spec.key_channel = t.key_axis == "channel";
      spec.group = t.group;
      spec.protect = t.protect;
      calibration.key_min = ChannelsAsKvfold(ck.config, t.key_min);
      calibration.key_max = ChannelsAsKvfold(ck.config, t.key_max);
    }
    out.policy = std::make_unique<QuantCachePolicy>(spec, ck.config, std::move(calibration));
    out.text = spec.Text();
    out.scored_from = window / 2;
    return out;
  }
  Fail("--kv-cache", "'" + text +
                         "' is neither evict<...>, quant<...> nor ggml<...> (docs/eviction.md, "
                         "docs/kv-quant.md)");
}

}  // namespace kvfold
