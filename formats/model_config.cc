#include "formats/model_config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "formats/architectures.h"
#include "formats/config_fields.h"
#include "formats/error.h"
#include "formats/json_file.h"
#include "formats/mapped_file.h"

namespace kvfold {
namespace {

using nlohmann::json;

// partial_rotary_factor (top level, or v5's rope_parameters): Phi-3's attention rotates the first
// int(head_dim x factor) channels of a head. transformers' Llama, Mistral and Qwen rotate whole
// heads, so a factor below 1 there is not a checkpoint they run.
void ReadRotaryDim(const FieldReader& f, const FieldReader& r, const std::string& file,
                   ModelConfig& c) {
  const FieldReader& where = r.Has("partial_rotary_factor") ? r : f;
  const double factor = where.PositiveNumber("partial_rotary_factor", 1.0);
  c.rotary_dim = static_cast<std::int64_t>(static_cast<double>(c.head_dim) * std::min(factor, 1.0));
  if (factor == 1.0) return;
  if (c.model_type != "phi3") {
    Fail(file, "partial_rotary_factor " + json(factor).dump() + " is not supported (model_type " +
                   c.model_type + " applies RoPE to the whole head)");
  }
  if (factor > 1.0 || c.rotary_dim < 2 || c.rotary_dim % 2 != 0) {
    Fail(file, "partial_rotary_factor " + json(factor).dump() + " with head_dim " +
                   std::to_string(c.head_dim) + " gives " + std::to_string(c.rotary_dim) +
                   " rotary channels (must be even, at least 2 and at most head_dim)");
  }
}

// longrope: its original context (rope_scaling's, else the config's top-level field, which
// Phi3Config defaults to 4096) and one factor per rotary frequency.
void CheckLongRope(const FieldReader& f, const std::string& file, ModelConfig& c) {
  RopeScaling& s = c.rope_scaling;
  if (s.type != "longrope") return;
  if (c.model_type != "phi3")
    Fail(file, "rope_scaling longrope is supported on model_type phi3 only, not " + c.model_type);
  if (s.original_max_position_embeddings == 0)
    s.original_max_position_embeddings = f.PositiveInt("original_max_position_embeddings", 4096);
  const auto pairs = static_cast<std::size_t>(c.rotary_dim / 2);
  if (s.short_factor.size() != pairs) {
    Fail(file, "rope_scaling.short_factor has " + std::to_string(s.short_factor.size()) +
                   " entries; the " + std::to_string(c.rotary_dim) + " rotary channels need " +
                   std::to_string(pairs));
  }
}

// rope_theta and rope_scaling, or transformers v5's rope_parameters holding both. The scaling
// types and their refusals are formats/rope.h's.
void ReadRope(const json& doc, const FieldReader& f, const std::string& file, ModelConfig& c) {
  const bool v5 = doc.contains("rope_parameters") && doc["rope_parameters"].is_object();
  const json& block = v5 ? doc["rope_parameters"] : doc;
  FieldReader r(block, file);
  c.rope_theta_defaulted = !r.Has("rope_theta");
  c.rope_theta = r.PositiveNumber("rope_theta", 10000.0);
  c.rope_scaling = ParseRopeScaling(v5 ? block : doc.value("rope_scaling", json()), file);
  ReadRotaryDim(f, r, file, c);
  CheckLongRope(f, file, c);
}

// The RoPE frequencies the config implies, at its longest context: each must be a positive
// normal number, or the angles (and every score after them) would be inf, NaN or zero.
void CheckRopeTable(const ModelConfig& c, const std::string& file) {
  const std::int64_t longest = c.max_position_embeddings;
  for (double f :
       RopeInverseFrequencies(c.rope_scaling, c.rope_theta, c.RotaryDim(), longest, longest)) {
    if (!(f > 0) || !std::isnormal(f)) {
      Fail(file, "rope_theta " + std::to_string(c.rope_theta) + " with rope_scaling " +
                     RopeScalingText(c.rope_scaling) + " gives a RoPE frequency of " +
                     std::to_string(f) + " (not a positive normal number)");
    }
  }
}

// The product of positive sizes, or INT64_MAX where it overflows.
std::int64_t Product(const std::vector<std::int64_t>& factors) {
  std::int64_t n = 1;
  for (std::int64_t f : factors) {
    if (__builtin_mul_overflow(n, f, &n)) return std::numeric_limits<std::int64_t>::max();
  }
  return n;
}

// Sizes kvfold allocates from before any weight bounds them (a RoPE table of head_dim / 2, a
// window per layer, a channel order per query row) must stay far beyond real models yet far
// below memory: Llama 3.1 405B has 126 layers and 16,384 query channels, Gemma's head_dim is
// 256. Without these caps a config with a head_dim near 2^34 passed the 2^48 product checks
// and asked for 88 GB at the RoPE table (found by fuzz_checkpoint).
void CheckDimensions(const ModelConfig& c, const std::string& file) {
  const std::pair<const char*, std::int64_t> dims[] = {
      {"num_hidden_layers", c.num_hidden_layers},
      {"head_dim", c.head_dim},
      {"num_attention_heads x head_dim", Product({c.num_attention_heads, c.head_dim})},
  };
  constexpr std::int64_t kLimit = std::int64_t{1} << 20;
  for (const auto& [what, n] : dims) {
    if (n > kLimit) {
      Fail(file, std::string(what) + " is too large (" + std::to_string(n) +
                     ", over 2^20): the config's sizes are not a real model's");
    }
  }
}

// Every tensor the config implies, and the KV cache per token, must have a size that fits in
// int64 with room to spare: a head_dim of 2^62 would otherwise wrap around and pass the shape
// checks. 2^48 elements is far beyond any real model (a 405B model's largest tensor is ~2^31).
void CheckSizes(const ModelConfig& c, const std::string& file) {
  constexpr std::int64_t kLimit = std::int64_t{1} << 48;
  const std::pair<const char*, std::vector<std::int64_t>> products[] = {
      {"num_attention_heads x head_dim x hidden_size",
       {c.num_attention_heads, c.head_dim, c.hidden_size}},
      {"num_key_value_heads x head_dim x hidden_size",
       {c.num_key_value_heads, c.head_dim, c.hidden_size}},
      {"intermediate_size x hidden_size", {c.intermediate_size, c.hidden_size}},
      {"vocab_size x hidden_size", {c.vocab_size, c.hidden_size}},
      {"max_position_embeddings x head_dim", {c.max_position_embeddings, c.head_dim}},
      {"2 x num_hidden_layers x num_key_value_heads x head_dim x 8 (KV bytes per token)",
       {2, c.num_hidden_layers, c.num_key_value_heads, c.head_dim, 8}},
  };
  for (const auto& [what, factors] : products) {
    if (Product(factors) > kLimit) {
      Fail(file, std::string(what) +
                     " is too large (over 2^48): the config's sizes are not a real model's");
    }
  }
}

}  // namespace

std::vector<double> RopePairFrequencies(const ModelConfig& c, std::int64_t tokens) {
  std::vector<double> inv = RopeInverseFrequencies(c.rope_scaling, c.rope_theta, c.RotaryDim(),
                                                   c.max_position_embeddings, tokens);
  inv.resize(static_cast<std::size_t>(c.head_dim / 2), 0.0);
  return inv;
}

double RopeCosSinScale(const ModelConfig& c) {
  return RopeAttentionFactor(c.rope_scaling, c.max_position_embeddings);
}

float EmbeddingScale(const ModelConfig& c, DType embedding_dtype) {
  if (!c.scale_embeddings) return 1.0f;
  const auto scale = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)));
  if (embedding_dtype == DType::kBF16) return Bf16ToF32(F32ToBf16(scale));
  if (embedding_dtype == DType::kF16) return F16ToF32(F32ToF16(scale));
  return scale;
}

ModelConfig ModelConfig::RopeOf(std::int64_t layer) const {
  if (!LocalRope(layer)) return *this;
  ModelConfig local = *this;
  local.rope_theta = local_rope_theta;
  local.rope_scaling = RopeScaling();
  return local;
}

double ModelConfig::AttentionScale() const {
  const double scalar =
      query_pre_attn_scalar > 0 ? query_pre_attn_scalar : static_cast<double>(head_dim);
  return 1.0 / std::sqrt(scalar);
}

bool ModelConfig::ComputesKv(std::int64_t layer) const {
  if (kv_layer_of.empty()) return true;
  for (std::int64_t source : kv_layer_of) {
    if (source == layer) return true;
  }
  return false;
}

bool ModelConfig::ReadsKvAfter(std::int64_t source, std::int64_t layer) const {
  for (std::int64_t m = layer + 1; m < static_cast<std::int64_t>(kv_layer_of.size()); ++m) {
    if (m != source && kv_layer_of[static_cast<std::size_t>(m)] == source) return true;
  }
  return false;
}

bool LayoutAttendsAbove(const std::vector<std::int64_t>& kv_layer_of) {
  for (std::size_t l = 0; l < kv_layer_of.size(); ++l) {
    if (kv_layer_of[l] > static_cast<std::int64_t>(l)) return true;
  }
  return false;
}

void ModelConfig::SetLayerKvHeads(const std::vector<std::int64_t>& counts) {
  num_key_value_heads = *std::max_element(counts.begin(), counts.end());
  const bool uniform =
      std::all_of(counts.begin(), counts.end(), [&](std::int64_t n) { return n == counts[0]; });
  layer_kv_heads = uniform ? std::vector<std::int64_t>{} : counts;
}

ModelConfig ModelConfig::ForLayer(std::int64_t layer) const {
  ModelConfig c = *this;
  c.num_key_value_heads = KvHeads(layer);
  c.layer_kv_heads.clear();
  return c;
}

std::int64_t ModelConfig::KvBytesPerToken(std::int64_t bytes_per_element) const {
  return KvBytesAt(1, bytes_per_element);  // every window holds one token
}

std::int64_t ModelConfig::KvBytesAt(std::int64_t tokens, std::int64_t bytes_per_element) const {
  std::int64_t bytes = 0;
  for (std::int64_t l = 0; l < num_hidden_layers; ++l) {
    if (!ComputesKv(l)) continue;
    const std::int64_t held = WindowOf(l) > 0 ? std::min(tokens, WindowOf(l)) : tokens;
    bytes += 2 * KvHeads(l) * head_dim * bytes_per_element * held;
  }
  return bytes;
}

std::int64_t DeciIntermediateSize(double ffn_mult, std::int64_t hidden_size) {
  const auto n = static_cast<std::int64_t>(2 * ffn_mult * static_cast<double>(hidden_size) / 3);
  return n % 256 == 0 ? n : n + 256 - n % 256;
}

std::int64_t ModelConfig::KvLayerCount() const {
  std::int64_t n = 0;
  for (std::int64_t l = 0; l < num_hidden_layers; ++l) n += ComputesKv(l) ? 1 : 0;
  return n;
}

std::vector<std::int64_t> ParseLayerTypes(const std::string& text, std::int64_t layers,
                                          const std::string& file_name) {
  std::vector<std::int64_t> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find('_', start), text.size());
    const std::string item = text.substr(start, end - start);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos ||
        item.size() > 9) {
      Fail(file_name, "layer_types '" + text + "': '" + item +
                          "' is not a layer index (sliding-window 's' layers are not supported)");
    }
    out.push_back(std::stoll(item));
    start = end + 1;
  }
  if (static_cast<std::int64_t>(out.size()) != layers) {
    Fail(file_name, "layer_types '" + text + "' has " + std::to_string(out.size()) +
                        " entries for " + std::to_string(layers) + " layers");
  }
  for (std::size_t l = 0; l < out.size(); ++l) {
    if (out[l] >= layers)
      Fail(file_name,
           "layer_types '" + text + "': layer " + std::to_string(out[l]) + " does not exist");
    if (out[static_cast<std::size_t>(out[l])] != out[l]) {
      Fail(file_name, "layer_types '" + text + "': layer " + std::to_string(l) + " reads layer " +
                          std::to_string(out[l]) + ", which does not compute its own K/V");
    }
  }
  return out;
}

std::string LayerTypesText(const std::vector<std::int64_t>& kv_layer_of) {
  std::string s;
  for (std::size_t l = 0; l < kv_layer_of.size(); ++l)
    s += (l ? "_" : "") + std::to_string(kv_layer_of[l]);
  return s;
}

namespace {

// One block_configs entry's FFN width: ffn_mult (NVIDIA's checkpoints) or intermediate_size.
std::int64_t BlockIntermediateSize(const json& ffn, std::int64_t hidden, const std::string& where,
                                   const std::string& file) {
  FieldReader r(ffn, file);
  if (r.Has("ffn_mult")) {
    const double mult = r.PositiveNumber("ffn_mult", 1);
    if (mult > 1e6) Fail(file, where + ".ffn.ffn_mult is too large");
    return DeciIntermediateSize(mult, hidden);
  }
  return r.PositiveInt("intermediate_size");
}

// Nemotron-NAS block_configs: one entry per layer; kvfold reads those that are Llama layers with
// their own KV-head count (no no-op or linear-replaced blocks, no attention window, one FFN width).
void ReadBlockConfigs(const json& doc, const std::string& file, ModelConfig& c) {
  if (!doc.contains("block_configs") || !doc["block_configs"].is_array() ||
      static_cast<std::int64_t>(doc["block_configs"].size()) != c.num_hidden_layers) {
    Fail(file, std::string("model_type ") + kPerLayerModelType +
                   " needs 'block_configs', a list with one entry per layer");
  }
  std::vector<std::int64_t> kv;
  std::int64_t width = 0;
  for (std::size_t l = 0; l < doc["block_configs"].size(); ++l) {
    const json& b = doc["block_configs"][l];
    const std::string where = "block_configs[" + std::to_string(l) + "]";
    if (!b.is_object() || !b.contains("attention") || !b["attention"].is_object() ||
        !b.contains("ffn") || !b["ffn"].is_object())
      Fail(file, where + " needs 'attention' and 'ffn' objects");
    for (const char* part : {"attention", "ffn"}) {
      FieldReader r(b[part], file);
      for (const char* key : {"no_op", "replace_with_linear"})
        if (r.Bool(key, false))
          Fail(file, where + "." + part + "." + key + " is not supported (a Llama layer only)");
      for (const char* key : {"sparsify", "window_length", "num_sink_tokens"})
        if (r.Has(key)) Fail(file, where + "." + part + "." + key + " is not supported");
    }
    FieldReader a(b["attention"], file);
    const std::int64_t group = a.PositiveInt("n_heads_in_group");
    if (c.num_attention_heads % group != 0)
      Fail(file, where + ".attention.n_heads_in_group (" + std::to_string(group) +
                     ") does not divide num_attention_heads");
    kv.push_back(c.num_attention_heads / group);
    if (FieldReader(b["ffn"], file).String("hidden_act", "silu") != "silu")
      Fail(file, where + ".ffn.hidden_act is not supported (only silu)");
    const std::int64_t w = BlockIntermediateSize(b["ffn"], c.hidden_size, where, file);
    if (width != 0 && w != width)
      Fail(file, where + ": layers of different FFN widths are not supported");
    width = w;
  }
  if (c.intermediate_size != 0 && c.intermediate_size != width)
    Fail(file, "intermediate_size " + std::to_string(c.intermediate_size) +
                   " disagrees with block_configs' FFN width " + std::to_string(width));
  c.intermediate_size = width;
  c.SetLayerKvHeads(kv);
}

ModelConfig ParseConfigDocument(const nlohmann::json& doc, const std::string& file_name) {
  FieldReader f(doc, file_name);

  ModelConfig c;
  c.model_type = f.String("model_type", "");
  if (c.model_type.empty()) Fail(file_name, "missing required field 'model_type'");
  const ArchitectureEntry& architecture = FindArchitecture(c.model_type, file_name);
  const bool cross_layer = c.model_type == kCrossLayerModelType;
  const bool per_layer = c.model_type == kPerLayerModelType;
  if (f.Has("architectures")) {
    const json& a = doc["architectures"];
    if (!a.is_array() || a.empty() || !a[0].is_string()) {
      Fail(file_name, "field 'architectures' must be a non-empty list of strings");
    }
    c.architecture = a[0].get<std::string>();
  }
  c.hidden_size = f.PositiveInt("hidden_size");
  c.num_hidden_layers = f.PositiveInt("num_hidden_layers");
  c.num_attention_heads = f.PositiveInt("num_attention_heads");
  c.num_key_value_heads = f.PositiveInt("num_key_value_heads", c.num_attention_heads);
  c.intermediate_size =
      per_layer ? f.PositiveInt("intermediate_size", 0) : f.PositiveInt("intermediate_size");
  c.vocab_size = f.PositiveInt("vocab_size");
  c.max_position_embeddings = f.PositiveInt("max_position_embeddings", 2048);
  if (c.hidden_size % c.num_attention_heads != 0 && !f.Has("head_dim") &&
      architecture.default_head_dim == 0) {
    Fail(file_name, "hidden_size is not a multiple of num_attention_heads and head_dim is absent");
  }
  c.head_dim = f.PositiveInt("head_dim", architecture.default_head_dim > 0
                                             ? architecture.default_head_dim
                                             : c.hidden_size / c.num_attention_heads);
  if (c.head_dim % 2 != 0) Fail(file_name, "head_dim must be even for RoPE");
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    Fail(file_name, "num_attention_heads (" + std::to_string(c.num_attention_heads) +
                        ") is not a multiple of num_key_value_heads (" +
                        std::to_string(c.num_key_value_heads) + ")");
  }
  CheckDimensions(c, file_name);
  if (per_layer) ReadBlockConfigs(doc, file_name, c);
  c.rms_norm_eps = f.PositiveNumber("rms_norm_eps", 1e-6);
  ReadRope(doc, f, file_name, c);
  c.tie_word_embeddings = f.Bool("tie_word_embeddings", architecture.tied_by_default);
  architecture.read(f, c);
  c.bos_token_id = f.Int("bos_token_id", 1);
  if (f.Has("eos_token_id") && doc["eos_token_id"].is_array()) {  // some configs list several
    const json& eos = doc["eos_token_id"];
    if (eos.empty() || !eos[0].is_number_integer()) {
      Fail(file_name, "field 'eos_token_id' must be an integer or a list of integers");
    }
    c.eos_token_id = eos[0].get<std::int64_t>();
  } else {
    c.eos_token_id = f.Int("eos_token_id", 2);
  }
  c.torch_dtype = f.String("torch_dtype", "");
  if (cross_layer) {
    // lckv-llama: a llama whose layer_types say which layer's K/V each layer reads. Its
    // sliding_window field only applies to layers marked 's', which kvfold does not support.
    c.sliding_window = 0;
    if (!f.Has("layer_types"))
      Fail(file_name, std::string("model_type ") + kCrossLayerModelType + " needs 'layer_types'");
    c.kv_layer_of = ParseLayerTypes(f.String("layer_types", ""), c.num_hidden_layers, file_name);
    c.lckv_forward_passes = f.PositiveInt("forward_passes", 7);
    c.lckv_backward_passes = f.PositiveInt("backward_passes", 2);
    if (f.Has("num_key_value_layers") &&
        f.PositiveInt("num_key_value_layers") != c.KvLayerCount()) {
      Fail(file_name, "num_key_value_layers (" +
                          std::to_string(f.PositiveInt("num_key_value_layers")) +
                          ") disagrees with layer_types, which has " +
                          std::to_string(c.KvLayerCount()) + " layers computing K/V");
    }
  } else if ((f.Has("layer_types") && doc["layer_types"].is_string()) ||
             f.Has("num_key_value_layers")) {
    // (Recent transformers write layer_types as a list of attention kinds; that is not sharing.)
    Fail(file_name, "cross-layer KV fields (layer_types, num_key_value_layers) need model_type " +
                        std::string(kCrossLayerModelType));
  }
  if (f.Has(kKeyReconstructField)) {
    const json& block = doc[kKeyReconstructField];
    if (!block.is_object())
      Fail(file_name, std::string("field '") + kKeyReconstructField + "' must be an object");
    FieldReader r(block, file_name);
    c.key_projection_heads = r.PositiveInt("key_projection_heads");
    if (c.key_projection_heads % c.num_key_value_heads != 0 ||
        c.num_attention_heads % c.key_projection_heads != 0) {
      Fail(file_name,
           "key_projection_heads must be a multiple of num_key_value_heads and divide "
           "num_attention_heads");
    }
  }
  if (c.PerLayerKvHeads() && c.key_projection_heads > 0)
    Fail(file_name, "per-layer KV heads with reconstruct-mode keys are not supported");
  if (c.SharesKv() && c.key_projection_heads > 0) {
    Fail(file_name, "cross-layer KV sharing with reconstruct-mode keys is not supported");
  }
  CheckSizes(c, file_name);
  CheckRopeTable(c, file_name);
  return c;
}

}  // namespace

ModelConfig ParseModelConfig(std::string_view json_text, const std::string& file_name) {
  json doc;
  CheckJsonDepth(json_text, file_name);
  try {
    doc = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    Fail(file_name, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!doc.is_object()) Fail(file_name, "not a JSON object");
  try {
    return ParseConfigDocument(doc, file_name);
  } catch (const json::exception& e) {  // a field of an unexpected type deep inside a block
    Fail(file_name, std::string("unexpected value (") + e.what() + ")");
  }
}

namespace {

// The depth to which the output config.json is indented as json::dump(2) indents it; deeper
// values stay on one line, as compact as they came. Real configs nest at most this deep (and so
// come out byte for byte as dump(2) writes them); a hostile one nested thousands deep would
// otherwise grow quadratically (each of its lines indented by its depth).
constexpr int kIndentedDepth = 5;

void DumpIndented(const nlohmann::ordered_json& v, int depth, std::string& out) {
  if (depth >= kIndentedDepth || !v.is_structured() || v.empty()) {
    out += v.dump();
    return;
  }
  const std::string pad(static_cast<std::size_t>(2 * (depth + 1)), ' ');
  out += v.is_object() ? "{\n" : "[\n";
  bool first = true;
  for (auto it = v.begin(); it != v.end(); ++it) {
    out += first ? "" : ",\n";
    first = false;
    out += pad;
    if (v.is_object()) out += nlohmann::ordered_json(it.key()).dump() + ": ";
    DumpIndented(it.value(), depth + 1, out);
  }
  out += "\n" + std::string(static_cast<std::size_t>(2 * depth), ' ') + (v.is_object() ? "}" : "]");
}

// ffn_mult that DeciLM's rule turns back into `intermediate`, or 0 if there is none.
double DeciFfnMult(std::int64_t intermediate, std::int64_t hidden) {
  const double mult = 1.5 * static_cast<double>(intermediate) / static_cast<double>(hidden);
  return DeciIntermediateSize(mult, hidden) == intermediate ? mult : 0;
}

// Nemotron-NAS fields for per-layer KV heads (what vLLM's nemotron_nas.py reads).
void WriteBlockConfigs(nlohmann::ordered_json& doc, const ModelConfig& c, const std::string& file) {
  const std::string problem = DeciConfigProblem(c);
  if (!problem.empty()) Fail(file, problem);
  // NVIDIA's checkpoints state the FFN width as ffn_mult, which DeciIntermediateSize rounds up
  // to a multiple of 256; any other width is written as intermediate_size, which vLLM reads
  // when a block has no ffn_mult.
  const double mult = DeciFfnMult(c.intermediate_size, c.hidden_size);
  nlohmann::ordered_json ffn = {{"no_op", false}, {"replace_with_linear", false}};
  if (mult > 0) {
    ffn["ffn_mult"] = mult;
  } else {
    ffn["intermediate_size"] = c.intermediate_size;
  }
  nlohmann::ordered_json blocks = nlohmann::ordered_json::array();
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    blocks.push_back({{"attention",
                       {{"n_heads_in_group", c.num_attention_heads / c.KvHeads(l)},
                        {"no_op", false},
                        {"replace_with_linear", false}}},
                      {"ffn", ffn}});
  }
  doc["model_type"] = kPerLayerModelType;
  doc["architectures"] = {kPerLayerArchitecture};
  doc["block_configs"] = std::move(blocks);
  doc["auto_map"] = {{"AutoConfig", "configuration_decilm.DeciLMConfig"}};
  doc.erase("num_key_value_heads");
}

// A config that was Nemotron-NAS and now has one KV-head count: a plain Llama again.
void DropBlockConfigs(nlohmann::ordered_json& doc) {
  if (!doc.contains("model_type") || doc["model_type"] != kPerLayerModelType) return;
  doc.erase("block_configs");
  doc.erase("auto_map");
  doc["model_type"] = "llama";
  doc["architectures"] = {"LlamaForCausalLM"};
}

}  // namespace

std::string DeciConfigProblem(const ModelConfig& c) {
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != kPerLayerModelType)
    return "per-layer KV heads are written as DeciLM, a Llama layout; " + c.model_type +
           " is not one (use the GGUF output)";
  if (c.qkv_bias || c.o_bias || c.mlp_bias)
    return "per-layer KV heads: DeciLM output of a model with biases is not supported";
  if (c.sliding_window > 0)
    return "per-layer KV heads: DeciLM has no sliding window; this model's would be lost";
  return "";
}

std::string UpdateConfigJson(std::string_view original, const ModelConfig& config,
                             const std::string& file_name) {
  nlohmann::ordered_json doc;
  CheckJsonDepth(original, file_name);
  try {
    doc = nlohmann::ordered_json::parse(original.begin(), original.end());
  } catch (const nlohmann::ordered_json::exception& e) {
    Fail(file_name, std::string("not valid JSON (") + e.what() + ")");
  }
  doc["num_key_value_heads"] = config.num_key_value_heads;
  doc["head_dim"] = config.head_dim;
  if (config.PerLayerKvHeads()) {
    WriteBlockConfigs(doc, config, file_name);
  } else {
    DropBlockConfigs(doc);
  }
  if (config.key_projection_heads > 0) {
    doc[kKeyReconstructField] = {{"key_projection_heads", config.key_projection_heads},
                                 {"note",
                                  "keys are cached as a post-RoPE projection; needs a "
                                  "runtime that applies k_cache_proj/q_cache_proj "
                                  "(kvfold eval does); see kvfold docs/formats.md"}};
  } else {
    doc.erase(kKeyReconstructField);
  }
  if (config.SharesKv()) {
    doc["model_type"] = kCrossLayerModelType;
    doc["architectures"] = {kCrossLayerArchitecture};
    doc["layer_types"] = LayerTypesText(config.kv_layer_of);
    doc["forward_passes"] = config.lckv_forward_passes;
    doc["backward_passes"] = config.lckv_backward_passes;
    doc["num_key_value_layers"] = config.KvLayerCount();  // pythia-mlkv's name for the same count
  }
  for (const auto& [name, json_text] : config.output_fields)
    doc[name] = nlohmann::ordered_json::parse(json_text);
  std::string out;
  DumpIndented(doc, 0, out);
  return out + "\n";
}

ModelConfig LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  return ParseModelConfig(ReadFileToString(path), path);
}

}  // namespace kvfold
