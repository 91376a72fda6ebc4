// ModelConfig: the fields of a HuggingFace config.json that kvfold needs, for the Llama family
// (llama, mistral, qwen2, qwen3). Anything the reference runtime could not honour is rejected
// here, by name (docs/formats.md lists what is accepted).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "formats/rope.h"

namespace kvfold {

struct ModelConfig {
  std::string model_type;    // "llama", "mistral", "qwen2" or "qwen3"
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM"
  std::int64_t hidden_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  std::int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  std::int64_t intermediate_size = 0;
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool rope_theta_defaulted = false;  // config.json had none: transformers' default 10000 applies
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;            // llama attention_bias; always true for qwen2
  bool o_bias = false;              // llama attention_bias
  bool mlp_bias = false;            // llama mlp_bias
  bool qk_norm = false;             // qwen3: per-head RMSNorm of queries and keys before RoPE
  std::int64_t sliding_window = 0;  // mistral; 0 = full causal attention
  std::int64_t bos_token_id = 1;
  std::int64_t eos_token_id = 2;
  std::string torch_dtype;  // as stored; informative only
  // kvfold reconstruct-mode key compression (config block "kvfold_key_reconstruct"): k_proj
  // keeps this many heads, and the runtime projects post-RoPE keys and queries onto
  // num_key_value_heads cached heads. 0 for a vanilla checkpoint.
  std::int64_t key_projection_heads = 0;
  // Top-level config.json fields a pass sets on output (name -> JSON text), e.g. the
  // quantization_config of the kv-scales pass. Not read from input files.
  std::map<std::string, std::string> output_fields;
  // Cross-layer KV sharing (MLKV, LCKV; config "layer_types" of whyNLP/LCKV's "lckv-llama"):
  // entry l = the layer whose K/V layer l attends to. Empty = every layer its own (vanilla).
  // A layer computes K/V iff it is some layer's source; a source above l (LCKV) is read for
  // earlier tokens only (the diagonal is masked).
  std::vector<std::int64_t> kv_layer_of;
  std::int64_t lckv_forward_passes = 7;   // LCKV "forward_passes" (m in the paper)
  std::int64_t lckv_backward_passes = 2;  // LCKV "backward_passes" (b)

  bool SharesKv() const { return !kv_layer_of.empty(); }
  std::int64_t KvSourceOf(std::int64_t layer) const {
    return kv_layer_of.empty() ? layer : kv_layer_of[static_cast<std::size_t>(layer)];
  }
  bool ComputesKv(std::int64_t layer) const;
  // Some layer reads the K/V of a layer above it: decoding is sequential (LCKV).
  bool AttendsAbove() const;
  std::int64_t KvLayerCount() const;  // layers that compute (and cache) K/V

  std::int64_t QueriesPerKvHead() const { return num_attention_heads / num_key_value_heads; }
  // Bytes one token occupies in the KV cache (keys + values, all layers) at `bytes_per_element`.
  std::int64_t KvBytesPerToken(std::int64_t bytes_per_element) const {
    return 2 * KvLayerCount() * num_key_value_heads * head_dim * bytes_per_element;
  }
};

// model_type and architecture of a checkpoint whose layers share K/V (whyNLP/LCKV's names).
constexpr const char* kCrossLayerModelType = "lckv-llama";
constexpr const char* kCrossLayerArchitecture = "LCKVLlamaForCausalLM";

// "0_6_6_6_6_6_6_7" -> {0, 6, ...}; throws Error("<file_name>: ...") unless it has one entry per
// layer, each a layer index, and every source is its own source (whyNLP/LCKV's rule).
std::vector<std::int64_t> ParseLayerTypes(const std::string& text, std::int64_t layers,
                                          const std::string& file_name);
std::string LayerTypesText(const std::vector<std::int64_t>& kv_layer_of);

// Config block that marks a reconstruct-mode checkpoint (not loadable by vanilla runtimes).
constexpr const char* kKeyReconstructField = "kvfold_key_reconstruct";

// Parses config.json text; throws Error("<file_name>: ...") naming the offending field.
ModelConfig ParseModelConfig(std::string_view json_text, const std::string& file_name);
// Reads and parses `model_dir`/config.json.
ModelConfig LoadModelConfig(const std::string& model_dir);

// `original` config.json text with the KV geometry of `config` written in: num_key_value_heads,
// head_dim and the reconstruct block (added or removed). Every other field is kept as it was.
std::string UpdateConfigJson(std::string_view original, const ModelConfig& config,
                             const std::string& file_name);

}  // namespace kvfold
