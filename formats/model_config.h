// ModelConfig: the fields of a HuggingFace config.json that kvfold needs, for the Llama family
// (llama, mistral, qwen2, qwen3), Phi-3 (phi3: fused projections, partial rotary, longrope) and
// Gemma 2/3 (gemma2, gemma3_text). What each model_type means is its entry in
// formats/architectures.cc. Anything the reference runtime could not honour is rejected here, by
// name (docs/formats.md lists what is accepted).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "formats/dtype.h"
#include "formats/rope.h"

namespace kvfold {

// The MLP's gate activation: SiLU (SwiGLU) or GELU's tanh approximation (Gemma's GeGLU,
// transformers' gelu_pytorch_tanh).
enum class MlpActivation { kSilu, kGeluTanh };

// Some layer of a K/V layout (entry l = the layer whose K/V layer l reads, as
// ModelConfig::kv_layer_of) reads a layer above it (LCKV).
bool LayoutAttendsAbove(const std::vector<std::int64_t>& kv_layer_of);

struct ModelConfig {
  std::string model_type;    // a formats/architectures.cc entry ("llama", "gemma2", ...)
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM"
  std::int64_t hidden_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;  // defaults to num_attention_heads; with per-layer
                                         // counts, their largest
  std::int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  // Channels of a head that RoPE rotates: head_dim x partial_rotary_factor (Phi-4-mini: 0.75).
  // Inside kvfold a head's channels are ordered so that rotary pair j is (j, j + head_dim / 2)
  // for every j, the channels RoPE passes through forming pairs of frequency zero
  // (formats/stored_layout.h); checkpoints are read and written in their own order.
  std::int64_t rotary_dim = 0;  // 0: the whole head (read through RotaryDim())
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
  std::int64_t sliding_window = 0;  // every layer's window (mistral, phi3); 0 = full causal
  // The Gemma family's layer (Llama's when left at these defaults):
  double norm_offset = 0;  // every RMSNorm scales by (norm_offset + w): Gemma's (1 + w)
  MlpActivation mlp_activation = MlpActivation::kSilu;
  // Gemma: the attention and MLP outputs are normalised before they join the residual (by
  // post_attention_layernorm and post_feedforward_layernorm), and the MLP's input norm is
  // pre_feedforward_layernorm.
  bool sandwich_norms = false;
  bool scale_embeddings = false;     // embeddings x sqrt(hidden_size) (factor in their dtype)
  double query_pre_attn_scalar = 0;  // scores scaled by its -1/2 power; 0: head_dim's
  double attn_logit_softcap = 0;     // Gemma 2: scores -> cap tanh(scores / cap), before the mask
  double final_logit_softcap = 0;    // Gemma 2: the same on the logits
  // Per layer: its sliding window, 0 for a global layer (Gemma's alternating layers). Empty:
  // sliding_window on every layer.
  std::vector<std::int64_t> layer_window;
  double local_rope_theta = 0;  // Gemma 3: sliding layers' RoPE base, unscaled (0: one RoPE)
  // Phi-3 stores q/k/v as one qkv_proj and gate/up as one gate_up_proj (formats/stored_layout.h).
  bool fused_qkv = false;
  bool fused_gate_up = false;
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
  // Per-layer KV heads (Nemotron-NAS / DeciLM "block_configs"; GGUF architecture deci): entry l
  // = layer l's KV heads, each dividing num_attention_heads. Empty = num_key_value_heads on every
  // layer. Never set with equal entries (SetLayerKvHeads folds a uniform list away).
  std::vector<std::int64_t> layer_kv_heads;

  bool SharesKv() const { return !kv_layer_of.empty(); }
  std::int64_t KvSourceOf(std::int64_t layer) const {
    return kv_layer_of.empty() ? layer : kv_layer_of[static_cast<std::size_t>(layer)];
  }
  bool ComputesKv(std::int64_t layer) const;
  // Some layer after `layer` reads the K/V of layer `source` (its own K/V excluded).
  bool ReadsKvAfter(std::int64_t source, std::int64_t layer) const;
  // Some layer reads the K/V of a layer above it: decoding is sequential (LCKV).
  bool AttendsAbove() const { return LayoutAttendsAbove(kv_layer_of); }
  std::int64_t KvLayerCount() const;  // layers that compute (and cache) K/V

  std::int64_t WindowOf(std::int64_t layer) const {
    return layer_window.empty() ? sliding_window : layer_window[static_cast<std::size_t>(layer)];
  }
  bool SlidingLayers() const { return sliding_window > 0 || !layer_window.empty(); }
  // Layer `layer` rotates with local_rope_theta, unscaled (Gemma 3's sliding layers).
  bool LocalRope(std::int64_t layer) const { return local_rope_theta > 0 && WindowOf(layer) > 0; }
  // The config whose rope_theta and rope_scaling layer `layer` rotates with.
  ModelConfig RopeOf(std::int64_t layer) const;
  // The factor scores are multiplied by: query_pre_attn_scalar^-1/2, else head_dim^-1/2.
  double AttentionScale() const;

  std::int64_t RotaryDim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  bool PartialRotary() const { return RotaryDim() < head_dim; }
  bool PerLayerKvHeads() const { return !layer_kv_heads.empty(); }
  std::int64_t KvHeads(std::int64_t layer) const {
    return layer_kv_heads.empty() ? num_key_value_heads
                                  : layer_kv_heads[static_cast<std::size_t>(layer)];
  }
  // Index of (layer, KV head g) among every layer's KV heads, layer-major; and their count.
  std::int64_t KvHeadIndex(std::int64_t layer, std::int64_t g) const {
    if (layer_kv_heads.empty()) return layer * num_key_value_heads + g;
    std::int64_t index = g;
    for (std::int64_t l = 0; l < layer; ++l) index += layer_kv_heads[static_cast<std::size_t>(l)];
    return index;
  }
  std::int64_t TotalKvHeads() const { return KvHeadIndex(num_hidden_layers, 0); }
  // Every layer's KV heads, in layer order.
  std::vector<std::int64_t> KvHeadCounts() const {
    std::vector<std::int64_t> counts;
    for (std::int64_t l = 0; l < num_hidden_layers; ++l) counts.push_back(KvHeads(l));
    return counts;
  }
  // Sets every layer's KV heads: a uniform list becomes num_key_value_heads alone.
  void SetLayerKvHeads(const std::vector<std::int64_t>& counts);
  // This config as layer `layer` sees it: that layer's KV heads as num_key_value_heads.
  ModelConfig ForLayer(std::int64_t layer) const;
  std::int64_t QueriesPerKvHead() const { return num_attention_heads / num_key_value_heads; }
  // Bytes one token occupies in the KV cache (keys + values, all layers) at `bytes_per_element`.
  std::int64_t KvBytesPerToken(std::int64_t bytes_per_element) const;
  // Bytes of the whole KV cache at a context of `tokens`: a sliding layer keeps at most its
  // window (KvBytesPerToken() x tokens without sliding layers).
  std::int64_t KvBytesAt(std::int64_t tokens, std::int64_t bytes_per_element) const;
};

// The angle per position of each of a head's head_dim / 2 rotary pairs in kvfold's channel order,
// for sequences of `tokens` positions: the rotated pairs first, then zeros for the channels RoPE
// passes through.
std::vector<double> RopePairFrequencies(const ModelConfig& config, std::int64_t tokens);
// What cos and sin of the rotated pairs are multiplied by (longrope's attention factor; else 1).
double RopeCosSinScale(const ModelConfig& config);
// What embeddings are multiplied by: Gemma's sqrt(hidden_size), rounded to the embedding's stored
// dtype as transformers rounds it to the model's (Gemma3TextScaledWordEmbedding, Gemma2Model);
// 1 for the others.
float EmbeddingScale(const ModelConfig& config, DType embedding_dtype);

// model_type and architecture of a checkpoint whose layers share K/V (whyNLP/LCKV's names).
constexpr const char* kCrossLayerModelType = "lckv-llama";
constexpr const char* kCrossLayerArchitecture = "LCKVLlamaForCausalLM";

// "0_6_6_6_6_6_6_7" -> {0, 6, ...}; throws Error("<file_name>: ...") unless it has one entry per
// layer, each a layer index, and every source is its own source (whyNLP/LCKV's rule).
std::vector<std::int64_t> ParseLayerTypes(const std::string& text, std::int64_t layers,
                                          const std::string& file_name);
std::string LayerTypesText(const std::vector<std::int64_t>& kv_layer_of);

// model_type and architecture of a checkpoint with per-layer KV heads (NVIDIA's Nemotron-NAS
// layout, which vLLM runs as DeciLMForCausalLM).
constexpr const char* kPerLayerModelType = "nemotron-nas";
constexpr const char* kPerLayerArchitecture = "DeciLMForCausalLM";

// DeciLM's FFN width rule (ffn_mult -> intermediate size, rounded up to a multiple of 256), as
// vLLM's nemotron_nas.py and llama.cpp's converter compute it.
std::int64_t DeciIntermediateSize(double ffn_mult, std::int64_t hidden_size);

// Why `config`'s per-layer KV heads cannot be written as a DeciLM config.json ("" when they
// can): the layers must be plain Llama layers (no biases, no sliding window).
std::string DeciConfigProblem(const ModelConfig& config);

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
