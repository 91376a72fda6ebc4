#include "formats/tensor_names.h"

#include <cstdlib>
#include <cstring>

#include "formats/error.h"

namespace kvfold {
namespace {

struct RoleSpec {
  TensorRole role;
  const char* canonical;
  const char* hf;  // per-layer names omit the "model.layers.N." prefix
  bool per_layer;
};

constexpr RoleSpec kRoles[] = {
    {TensorRole::kEmbedTokens, "embed", "model.embed_tokens.weight", false},
    {TensorRole::kFinalNorm, "final_norm", "model.norm.weight", false},
    {TensorRole::kLmHead, "lm_head", "lm_head.weight", false},
    {TensorRole::kAttnNorm, "attn_norm", "input_layernorm.weight", true},
    {TensorRole::kQProj, "wq", "self_attn.q_proj.weight", true},
    {TensorRole::kKProj, "wk", "self_attn.k_proj.weight", true},
    {TensorRole::kVProj, "wv", "self_attn.v_proj.weight", true},
    {TensorRole::kOProj, "wo", "self_attn.o_proj.weight", true},
    {TensorRole::kQBias, "bq", "self_attn.q_proj.bias", true},
    {TensorRole::kKBias, "bk", "self_attn.k_proj.bias", true},
    {TensorRole::kVBias, "bv", "self_attn.v_proj.bias", true},
    {TensorRole::kOBias, "bo", "self_attn.o_proj.bias", true},
    {TensorRole::kMlpNorm, "mlp_norm", "post_attention_layernorm.weight", true},
    {TensorRole::kGateProj, "w_gate", "mlp.gate_proj.weight", true},
    {TensorRole::kUpProj, "w_up", "mlp.up_proj.weight", true},
    {TensorRole::kDownProj, "w_down", "mlp.down_proj.weight", true},
    {TensorRole::kGateBias, "b_gate", "mlp.gate_proj.bias", true},
    {TensorRole::kUpBias, "b_up", "mlp.up_proj.bias", true},
    {TensorRole::kDownBias, "b_down", "mlp.down_proj.bias", true},
    {TensorRole::kKCacheProj, "k_cache_proj", "self_attn.k_cache_proj.weight", true},
    {TensorRole::kQCacheProj, "q_cache_proj", "self_attn.q_cache_proj.weight", true},
    {TensorRole::kQNorm, "q_norm", "self_attn.q_norm.weight", true},
    {TensorRole::kKNorm, "k_norm", "self_attn.k_norm.weight", true},
    {TensorRole::kKScale, "k_scale", "self_attn.k_scale", true},
    {TensorRole::kVScale, "v_scale", "self_attn.v_scale", true},
    {TensorRole::kPreFeedforwardNorm, "pre_ffw_norm", "pre_feedforward_layernorm.weight", true},
    {TensorRole::kPostFeedforwardNorm, "post_ffw_norm", "post_feedforward_layernorm.weight", true},
};

const RoleSpec& Spec(TensorRole role) {
  for (const auto& s : kRoles) {
    if (s.role == role) return s;
  }
  Fail("tensor_names", "internal: unknown role");
}

constexpr const char* kLayerPrefix = "model.layers.";

}  // namespace

const char* RoleName(TensorRole role) { return Spec(role).canonical; }
bool IsPerLayer(TensorRole role) { return Spec(role).per_layer; }

std::string HfTensorName(const TensorId& id) {
  const RoleSpec& s = Spec(id.role);
  if (!s.per_layer) return s.hf;
  return kLayerPrefix + std::to_string(id.layer) + "." + s.hf;
}

std::optional<TensorId> ParseHfTensorName(const std::string& name) {
  if (name.rfind(kLayerPrefix, 0) == 0) {
    const char* p = name.c_str() + std::strlen(kLayerPrefix);
    char* end = nullptr;
    long layer = std::strtol(p, &end, 10);
    if (end == p || *end != '.' || layer < 0) return std::nullopt;
    std::string rest(end + 1);
    for (const auto& s : kRoles) {
      if (s.per_layer && rest == s.hf) return TensorId{s.role, static_cast<int>(layer)};
    }
    return std::nullopt;
  }
  for (const auto& s : kRoles) {
    if (!s.per_layer && name == s.hf) return TensorId{s.role, -1};
  }
  return std::nullopt;
}

std::vector<std::int64_t> ExpectedShape(const TensorId& id, const ModelConfig& config) {
  if (config.PerLayerKvHeads() && id.layer >= 0)
    return ExpectedShape(id, config.ForLayer(id.layer));
  const ModelConfig& c = config;
  const std::int64_t q_out = c.num_attention_heads * c.head_dim;
  const std::int64_t kv_out = c.num_key_value_heads * c.head_dim;
  // In reconstruct mode k_proj keeps the pre-compression heads.
  const std::int64_t k_heads =
      c.key_projection_heads > 0 ? c.key_projection_heads : c.num_key_value_heads;
  const std::int64_t k_out = k_heads * c.head_dim;
  switch (id.role) {
    case TensorRole::kEmbedTokens:
    case TensorRole::kLmHead:
      return {c.vocab_size, c.hidden_size};
    case TensorRole::kFinalNorm:
    case TensorRole::kAttnNorm:
    case TensorRole::kMlpNorm:
    case TensorRole::kPreFeedforwardNorm:
    case TensorRole::kPostFeedforwardNorm:
    case TensorRole::kOBias:
    case TensorRole::kDownBias:
      return {c.hidden_size};
    case TensorRole::kQProj:
      return {q_out, c.hidden_size};
    case TensorRole::kKProj:
      return {k_out, c.hidden_size};
    case TensorRole::kVProj:
      return {kv_out, c.hidden_size};
    case TensorRole::kOProj:
      return {c.hidden_size, q_out};
    case TensorRole::kQBias:
      return {q_out};
    case TensorRole::kKBias:
      return {k_out};
    case TensorRole::kVBias:
      return {kv_out};
    case TensorRole::kGateProj:
    case TensorRole::kUpProj:
      return {c.intermediate_size, c.hidden_size};
    case TensorRole::kDownProj:
      return {c.hidden_size, c.intermediate_size};
    case TensorRole::kGateBias:
    case TensorRole::kUpBias:
      return {c.intermediate_size};
    case TensorRole::kKCacheProj:
      return {c.num_key_value_heads, c.head_dim, (k_heads / c.num_key_value_heads) * c.head_dim};
    case TensorRole::kQCacheProj:
      return {c.num_attention_heads, c.head_dim, c.head_dim};
    case TensorRole::kQNorm:
    case TensorRole::kKNorm:
      return {c.head_dim};
    case TensorRole::kKScale:  // the per-tensor strategy's; per head: [kv_heads, 1, 1]
    case TensorRole::kVScale:
      return {1};
  }
  Fail("tensor_names", "internal: unknown role");
}

std::vector<TensorId> RequiredTensors(const ModelConfig& c) {
  std::vector<TensorId> ids = {{TensorRole::kEmbedTokens}, {TensorRole::kFinalNorm}};
  if (!c.tie_word_embeddings) ids.push_back({TensorRole::kLmHead});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const bool kv = c.ComputesKv(l);  // layers reading another layer's K/V have no k/v_proj
    for (TensorRole r : {TensorRole::kAttnNorm, TensorRole::kQProj, TensorRole::kKProj,
                         TensorRole::kVProj, TensorRole::kOProj, TensorRole::kMlpNorm,
                         TensorRole::kGateProj, TensorRole::kUpProj, TensorRole::kDownProj}) {
      if (kv || (r != TensorRole::kKProj && r != TensorRole::kVProj)) ids.push_back({r, l});
    }
    if (c.qkv_bias) {
      ids.push_back({TensorRole::kQBias, l});
      if (kv) {
        ids.push_back({TensorRole::kKBias, l});
        ids.push_back({TensorRole::kVBias, l});
      }
    }
    if (c.o_bias) ids.push_back({TensorRole::kOBias, l});
    if (c.sandwich_norms) {
      ids.push_back({TensorRole::kPreFeedforwardNorm, l});
      ids.push_back({TensorRole::kPostFeedforwardNorm, l});
    }
    if (c.qk_norm) {
      ids.push_back({TensorRole::kQNorm, l});
      if (kv) ids.push_back({TensorRole::kKNorm, l});
    }
    if (c.key_projection_heads > 0) {
      ids.push_back({TensorRole::kKCacheProj, l});
      ids.push_back({TensorRole::kQCacheProj, l});
    }
    if (c.mlp_bias) {
      for (TensorRole r : {TensorRole::kGateBias, TensorRole::kUpBias, TensorRole::kDownBias}) {
        ids.push_back({r, l});
      }
    }
  }
  return ids;
}

}  // namespace kvfold
