// The one place that maps HuggingFace tensor names of the Llama family to canonical roles, with
// each role's shape (derived from the config) and read contract. A role is named after its HF
// tensor; what the tensor does in a layer is the architecture's (config.sandwich_norms).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "formats/model_config.h"

namespace kvfold {

enum class TensorRole {
  kEmbedTokens,
  kFinalNorm,
  kLmHead,
  kAttnNorm,
  kQProj,
  kKProj,
  kVProj,
  kOProj,
  kQBias,
  kKBias,
  kVBias,
  kOBias,
  kMlpNorm,  // post_attention_layernorm: Llama's MLP input norm; Gemma's attention output norm
  kGateProj,
  kUpProj,
  kDownProj,
  kGateBias,
  kUpBias,
  kDownBias,
  kKCacheProj,
  kQCacheProj,  // reconstruct-mode key compression (config.key_projection_heads)
  kQNorm,
  kKNorm,   // qwen3: per-head RMSNorm weights of queries and keys [head_dim]
  kKScale,  // vLLM's static FP8 cache scales (kv-scales): [1] or [kv_heads, 1, 1]
  kVScale,
  kPreFeedforwardNorm,   // Gemma: the MLP's input norm
  kPostFeedforwardNorm,  // Gemma: the MLP's output norm
};

struct TensorId {
  TensorRole role;
  int layer = -1;  // -1 for model-level tensors
  bool operator==(const TensorId& o) const { return role == o.role && layer == o.layer; }
};

// Short canonical role name ("wq", "attn_norm", ...), used in logs and kvfold's own files.
const char* RoleName(TensorRole role);
bool IsPerLayer(TensorRole role);
// "model.layers.3.self_attn.q_proj.weight" for {kQProj, 3}.
std::string HfTensorName(const TensorId& id);
// The inverse of HfTensorName; nullopt for a name the Llama family does not use.
std::optional<TensorId> ParseHfTensorName(const std::string& name);
// Shape in HF [out, in] layout, from the config.
std::vector<std::int64_t> ExpectedShape(const TensorId& id, const ModelConfig& config);
// Every tensor a checkpoint with `config` must contain (the read contract), model-level first.
std::vector<TensorId> RequiredTensors(const ModelConfig& config);

}  // namespace kvfold
