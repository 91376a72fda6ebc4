#include "converter/export/gguf_model.h"

#include <cstring>

#include "formats/error.h"
#include "formats/rope.h"

namespace kvfold {
namespace {

struct NameSpec {
  TensorRole role;
  const char* gguf;  // per-layer names omit the "blk.N." prefix
};

constexpr NameSpec kNames[] = {
    {TensorRole::kEmbedTokens, "token_embd.weight"},
    {TensorRole::kFinalNorm, "output_norm.weight"},
    {TensorRole::kLmHead, "output.weight"},
    {TensorRole::kAttnNorm, "attn_norm.weight"},
    {TensorRole::kQProj, "attn_q.weight"},
    {TensorRole::kKProj, "attn_k.weight"},
    {TensorRole::kVProj, "attn_v.weight"},
    {TensorRole::kOProj, "attn_output.weight"},
    {TensorRole::kQBias, "attn_q.bias"},
    {TensorRole::kKBias, "attn_k.bias"},
    {TensorRole::kVBias, "attn_v.bias"},
    {TensorRole::kOBias, "attn_output.bias"},
    {TensorRole::kMlpNorm, "ffn_norm.weight"},
    {TensorRole::kGateProj, "ffn_gate.weight"},
    {TensorRole::kUpProj, "ffn_up.weight"},
    {TensorRole::kDownProj, "ffn_down.weight"},
    {TensorRole::kQNorm, "attn_q_norm.weight"},
    {TensorRole::kKNorm, "attn_k_norm.weight"},
};

constexpr const char* kBlockPrefix = "blk.";

}  // namespace

namespace {

// What llama.cpp's gemma2 / gemma3 fix in code rather than read from the file (llama-model.cpp):
// every `pattern`-th layer global, the rest sliding with one window; scores scaled by
// head_dim^-1/2; Gemma 3's sliding layers on RoPE base 10000 unscaled; no biases.
void CheckGemmaLayout(const ModelConfig& c, std::int64_t pattern, const std::string& arch,
                      const std::string& where) {
  const std::string what = "llama.cpp's " + arch + " ";
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const bool sliding = l % pattern < pattern - 1;
    if ((c.WindowOf(l) > 0) != sliding || c.WindowOf(l) != (sliding ? c.WindowOf(0) : 0))
      Fail(where, what + "has every " + std::to_string(pattern) +
                      "th layer global and the others sliding with one window; layer " +
                      std::to_string(l) + " is not so");
  }
  if (c.query_pre_attn_scalar != static_cast<double>(c.head_dim))
    Fail(where, what +
                    "scales scores by head_dim^-1/2; this model's query_pre_attn_scalar is not "
                    "head_dim");
  if (c.qkv_bias || c.o_bias) Fail(where, what + "reads no attention biases");
  if (arch == "gemma3" &&
      (c.local_rope_theta != 10000.0 || c.attn_logit_softcap > 0 || c.final_logit_softcap > 0))
    Fail(where, what + "has sliding layers on RoPE base 10000 and no soft-caps");
}

}  // namespace

std::string GgufArchitecture(const ModelConfig& c, const std::string& where) {
  if (c.model_type == "gemma2" || c.model_type == "gemma3_text") {
    const std::string arch = c.model_type == "gemma2" ? "gemma2" : "gemma3";
    CheckGemmaLayout(c, arch == "gemma2" ? 2 : 6, arch, where);
    if (c.PerLayerKvHeads()) Fail(where, "llama.cpp's " + arch + " has one KV-head count");
    return arch;
  }
  if (c.SharesKv()) {
    Fail(where, "its layers share K/V (" + c.model_type +
                    "), which llama.cpp cannot run: export the model before mlkv/lckv, or use "
                    "kvfold's runtime");
  }
  if (c.key_projection_heads > 0) {
    Fail(where,
         "its keys are compressed after RoPE (gqa-svd rope=reconstruct), which llama.cpp cannot "
         "run: convert with rope=commute for llama.cpp");
  }
  if (c.rope_scaling.type == "dynamic") {
    Fail(where, "rope_scaling dynamic (NTK) has no llama.cpp equivalent");
  }
  if (c.mlp_bias) Fail(where, "MLP biases (mlp_bias) are not read by llama.cpp's llama");
  if (c.model_type == "phi3") {  // llama.cpp's phi3: fused qkv and gate/up, NEOX RoPE
    if (c.num_attention_heads * c.head_dim != c.hidden_size)
      Fail(where, "llama.cpp's phi3 needs heads x head_dim = hidden_size");
    return "phi3";
  }
  if (c.model_type == "qwen2") {
    if (c.num_attention_heads * c.head_dim != c.hidden_size)
      Fail(where, "llama.cpp's qwen2 needs heads x head_dim = hidden_size");
    if (c.o_bias) Fail(where, "llama.cpp's qwen2 has no o_proj bias");
    return "qwen2";
  }
  if (c.model_type == "qwen3") {
    if (c.qkv_bias || c.o_bias) Fail(where, "llama.cpp's qwen3 reads no attention biases");
    return "qwen3";
  }
  if (c.o_bias && c.model_type != "llama") Fail(where, "an o_proj bias outside Llama");
  if (c.PerLayerKvHeads()) {  // llama.cpp's Llama with per-layer counts (Nemotron-NAS)
    if (c.qkv_bias || c.o_bias) Fail(where, "llama.cpp's deci reads no attention biases");
    return "deci";
  }
  // llama, mistral (llama.cpp's converter maps Mistral to llama too), and nemotron-nas with one
  // KV-head count
  return "llama";
}

std::string GgufTensorName(const TensorId& id, const std::string& where,
                           const std::string& architecture) {
  if (IsGemma(architecture)) {  // post_attention_layernorm is the attention output's norm there
    const char* gemma = id.role == TensorRole::kMlpNorm               ? "post_attention_norm.weight"
                        : id.role == TensorRole::kPreFeedforwardNorm  ? "ffn_norm.weight"
                        : id.role == TensorRole::kPostFeedforwardNorm ? "post_ffw_norm.weight"
                                                                      : nullptr;
    if (gemma != nullptr) return kBlockPrefix + std::to_string(id.layer) + "." + gemma;
  }
  for (const auto& n : kNames) {
    if (n.role != id.role) continue;
    if (!IsPerLayer(id.role)) return n.gguf;
    return kBlockPrefix + std::to_string(id.layer) + "." + n.gguf;
  }
  if (id.role == TensorRole::kKScale || id.role == TensorRole::kVScale) {
    Fail(where,
         "holds vLLM's FP8 cache scales (kv-scales), which llama.cpp does not read: export the "
         "model without kv-scales and choose llama.cpp's cache type (-ctk/-ctv)");
  }
  Fail(where, std::string("has kvfold's ") + RoleName(id.role) +
                  " tensors, which llama.cpp cannot run (rope=reconstruct): use rope=commute");
}

std::string GgufStoredTensorName(const std::string& hf_name, const std::string& where) {
  if (const std::optional<TensorId> id = ParseHfTensorName(hf_name))
    return GgufTensorName(*id, where);
  const std::string prefix = "model.layers.";
  const std::size_t dot = hf_name.find('.', prefix.size());
  if (hf_name.rfind(prefix, 0) == 0 && dot != std::string::npos) {
    const std::string layer = hf_name.substr(prefix.size(), dot - prefix.size());
    const std::string rest = hf_name.substr(dot + 1);
    if (rest == "self_attn.qkv_proj.weight") return kBlockPrefix + layer + ".attn_qkv.weight";
    if (rest == "mlp.gate_up_proj.weight") return kBlockPrefix + layer + ".ffn_up.weight";
  }
  Fail(where, "is a tensor llama.cpp does not read");
}

std::optional<TensorId> TensorIdOfGgufName(const std::string& name) {
  if (name.rfind(kBlockPrefix, 0) == 0) {
    const char* p = name.c_str() + std::strlen(kBlockPrefix);
    char* end = nullptr;
    const long layer = std::strtol(p, &end, 10);
    if (end == p || *end != '.' || layer < 0 || layer > 1000000) return std::nullopt;
    for (const auto& n : kNames) {
      if (IsPerLayer(n.role) && std::strcmp(end + 1, n.gguf) == 0)
        return TensorId{n.role, static_cast<int>(layer)};
    }
    return std::nullopt;
  }
  for (const auto& n : kNames) {
    if (!IsPerLayer(n.role) && name == n.gguf) return TensorId{n.role, -1};
  }
  return std::nullopt;
}

bool IsGemma(const std::string& architecture) {
  return architecture == "gemma2" || architecture == "gemma3";
}

float NormWeightShift(const std::string& architecture) {
  return IsGemma(architecture) ? 1.0f : 0.0f;
}

bool PermutesRows(const std::string& architecture, TensorRole role) {
  const bool normal_rope = architecture == "llama" || architecture == "deci";
  return normal_rope && (role == TensorRole::kQProj || role == TensorRole::kKProj ||
                         role == TensorRole::kQBias || role == TensorRole::kKBias);
}

std::int64_t PermutedRow(std::int64_t row, std::int64_t head_dim) {
  const std::int64_t head = row / head_dim, i = row % head_dim, half = head_dim / 2;
  return head * head_dim + (i < half ? 2 * i : 2 * (i - half) + 1);
}

std::vector<float> RopeFrequencyFactors(const ModelConfig& c) {
  if (c.rope_scaling.type != "llama3") return {};
  const RopeScaling plain;
  // llama3 scaling does not depend on the sequence length; any length gives the same factors.
  const auto base =
      RopeInverseFrequencies(plain, c.rope_theta, c.head_dim, c.max_position_embeddings, 1);
  const auto scaled = RopeInverseFrequencies(c.rope_scaling, c.rope_theta, c.head_dim,
                                             c.max_position_embeddings, 1);
  std::vector<float> factors;
  for (std::size_t j = 0; j < base.size(); ++j)
    factors.push_back(static_cast<float>(base[j] / scaled[j]));
  return factors;
}

void AddArchitectureMetadata(const ModelConfig& c, const std::string& arch, GgufMetadata& m) {
  auto u32 = [&](const std::string& key, std::int64_t v) {
    m.Set(arch + "." + key, GgufValue::U32(static_cast<std::uint32_t>(v)));
  };
  u32("context_length", c.max_position_embeddings);
  u32("embedding_length", c.hidden_size);
  u32("block_count", c.num_hidden_layers);
  u32("feed_forward_length", c.intermediate_size);
  u32("attention.head_count", c.num_attention_heads);
  if (c.PerLayerKvHeads()) {  // deci: llama.cpp reads a count or an INT32 array per layer
    std::vector<double> kv;
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l)
      kv.push_back(static_cast<double>(c.KvHeads(l)));
    m.Set(arch + ".attention.head_count_kv", GgufValue::Numbers(GgufValueType::kI32, kv));
  } else {
    u32("attention.head_count_kv", c.num_key_value_heads);
  }
  u32("attention.key_length", c.head_dim);
  u32("attention.value_length", c.head_dim);
  u32("rope.dimension_count", c.RotaryDim());  // phi3: the rotated channels only (NEOX)
  u32("vocab_size", c.vocab_size);
  m.Set(arch + ".rope.freq_base", GgufValue::F32(static_cast<float>(c.rope_theta)));
  m.Set(arch + ".attention.layer_norm_rms_epsilon",
        GgufValue::F32(static_cast<float>(c.rms_norm_eps)));
  if (c.rope_scaling.type == "longrope") {  // factors: rope_factors_long/short.weight
    m.Set(arch + ".rope.scaling.attn_factor",
          GgufValue::F32(static_cast<float>(RopeCosSinScale(c))));
    u32("rope.scaling.original_context_length", c.rope_scaling.original_max_position_embeddings);
  }
  if (!c.layer_window.empty()) u32("attention.sliding_window", c.WindowOf(0));
  if (c.attn_logit_softcap > 0)
    m.Set(arch + ".attn_logit_softcapping",
          GgufValue::F32(static_cast<float>(c.attn_logit_softcap)));
  if (c.final_logit_softcap > 0)
    m.Set(arch + ".final_logit_softcapping",
          GgufValue::F32(static_cast<float>(c.final_logit_softcap)));
  if (c.rope_scaling.type == "linear") {
    m.Set(arch + ".rope.scaling.type", GgufValue::String("linear"));
    m.Set(arch + ".rope.scaling.factor", GgufValue::F32(static_cast<float>(c.rope_scaling.factor)));
  }
}

std::uint32_t GgufFileType(GgmlType type) {
  switch (type) {
    case GgmlType::kF16:
      return 1;
    case GgmlType::kBF16:
      return 32;
    default:
      return 0;
  }
}

}  // namespace kvfold
