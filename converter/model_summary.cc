#include "converter/model_summary.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/version.h"

namespace kvfold {

ModelSummary SummarizeCheckpoint(const Checkpoint& ck) {
  const ModelConfig& c = ck.config;
  ModelSummary s;
  s.path = ck.dir;
  s.architecture = c.architecture;
  s.model_type = c.model_type;
  s.attention = c.PerLayerKvHeads()                              ? "GQA, per layer"
                : c.num_key_value_heads == c.num_attention_heads ? "MHA"
                : c.num_key_value_heads == 1                     ? "MQA"
                                                                 : "GQA";
  s.layer_kv_heads = c.layer_kv_heads;
  s.layers = c.num_hidden_layers;
  s.hidden = c.hidden_size;
  s.heads = c.num_attention_heads;
  s.kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim;
  s.rotary_dim = c.RotaryDim();
  s.intermediate = c.intermediate_size;
  s.vocab = c.vocab_size;
  s.max_positions = c.max_position_embeddings;
  s.rope_theta = c.rope_theta;
  s.rope_theta_defaulted = c.rope_theta_defaulted;
  s.rope_scaling = RopeScalingText(c.rope_scaling);
  s.tokenizer = ck.tokenizer_path.substr(ck.tokenizer_path.find_last_of('/') + 1);
  s.tied_embeddings = c.tie_word_embeddings;
  s.dtype = DTypeName(
      ck.Tensor({TensorRole::kQProj, 0}).entry->dtype);  // layer 0 may have no k_proj (LCKV)
  s.parameters = ck.ParameterCount();
  s.kv_bytes_per_token = c.KvBytesPerToken(ck.StoredElementBytes());
  s.kv_bytes_at_max_positions = c.KvBytesAt(c.max_position_embeddings, ck.StoredElementBytes());
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    s.sliding_layers += c.WindowOf(l) > 0 ? 1 : 0;
    s.sliding_window = std::max(s.sliding_window, c.WindowOf(l));
  }
  s.kv_layers = c.KvLayerCount();
  if (c.SharesKv()) s.layer_types = LayerTypesText(c.kv_layer_of);
  s.files = static_cast<int>(ck.tensors.files().size());
  s.tensors = 0;  // as stored: Phi-3's fused qkv_proj is one tensor, not its three views
  for (const auto& file : ck.tensors.files())
    s.tensors += static_cast<int>(file->header().tensors.size());
  return s;
}

std::string SummaryText(const ModelSummary& s) {
  std::ostringstream o;
  std::string kv_heads = std::to_string(s.kv_heads);
  if (!s.layer_kv_heads.empty()) kv_heads = nlohmann::json(s.layer_kv_heads).dump();
  o << "model          " << s.path << "\n"
    << "architecture   " << s.architecture << " (" << s.model_type << ")\n"
    << "attention      " << s.attention << ": " << s.heads << " query heads, " << kv_heads
    << " KV heads, head dim " << s.head_dim << "\n"
    << "layers         " << s.layers << "  (hidden " << s.hidden << ", intermediate "
    << s.intermediate << ")\n"
    << "vocab          " << s.vocab << (s.tied_embeddings ? "  (tied embeddings)" : "") << "\n"
    << "rope theta     " << s.rope_theta
    << (s.rope_theta_defaulted ? " (not in config.json: transformers' default)" : "")
    << "  (max positions " << s.max_positions;
  if (s.rotary_dim < s.head_dim)
    o << "; " << s.rotary_dim << " of " << s.head_dim << " channels of a head rotated";
  o << ")\n"
    << "rope scaling   " << s.rope_scaling << "\n"
    << "tokenizer      "
    << (s.tokenizer.empty() ? "none (eval and convert need tokenizer.json or tokenizer.model)"
                            : s.tokenizer)
    << "\n"
    << "parameters     " << s.parameters << "  (" << s.dtype << ", " << s.tensors << " tensors in "
    << s.files << " file" << (s.files == 1 ? "" : "s") << ")\n"
    << "KV cache       " << s.kv_bytes_per_token << " bytes/token at " << s.dtype << "\n";
  if (s.kv_bytes_at_max_positions < s.kv_bytes_per_token * s.max_positions) {
    o << "sliding        " << s.sliding_layers << " of " << s.layers << " layers attend over "
      << s.sliding_window
      << " tokens and cache no more: " << s.kv_bytes_at_max_positions / (1 << 20) << " MiB at "
      << s.max_positions << " tokens, not " << s.kv_bytes_per_token * s.max_positions / (1 << 20)
      << " MiB\n";
  }
  if (!s.layer_types.empty()) {
    o << "KV layers      " << s.kv_layers << " of " << s.layers << " compute K/V  (layer_types "
      << s.layer_types << ")\n";
  }
  return o.str();
}

std::string SummaryJson(const ModelSummary& s) {
  nlohmann::ordered_json j = {
      {"kvfold_version", kVersion},
      {"path", s.path},
      {"architecture", s.architecture},
      {"model_type", s.model_type},
      {"attention", s.attention},
      {"num_hidden_layers", s.layers},
      {"hidden_size", s.hidden},
      {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.layer_kv_heads.empty() ? nlohmann::ordered_json(s.kv_heads)
                                                       : nlohmann::ordered_json(s.layer_kv_heads)},
      {"head_dim", s.head_dim},
      {"rotary_dim", s.rotary_dim},
      {"intermediate_size", s.intermediate},
      {"vocab_size", s.vocab},
      {"max_position_embeddings", s.max_positions},
      {"rope_theta", s.rope_theta},
      {"rope_theta_from_config", !s.rope_theta_defaulted},
      {"rope_scaling", s.rope_scaling},
      {"tokenizer",
       s.tokenizer.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(s.tokenizer)},
      {"tie_word_embeddings", s.tied_embeddings},
      {"dtype", s.dtype},
      {"parameters", s.parameters},
      {"kv_cache_bytes_per_token", s.kv_bytes_per_token},
      {"sliding_layers", s.sliding_layers},
      {"kv_cache_bytes_at_max_positions", s.kv_bytes_at_max_positions},
      {"num_key_value_layers", s.kv_layers},
      {"layer_types",
       s.layer_types.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(s.layer_types)},
      {"files", s.files},
      {"tensors", s.tensors},
  };
  return j.dump(2) + "\n";
}

}  // namespace kvfold
