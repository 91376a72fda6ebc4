#include "formats/architectures.h"

#include <cmath>

#include "formats/error.h"

namespace kvfold {
namespace {

using nlohmann::json;

void RequireSilu(const FieldReader& f) {
  const std::string act = f.String("hidden_act", "silu");
  if (act != "silu") Fail(f.file(), "hidden_act '" + act + "' is not supported (only silu)");
}

// Llama's attention_bias (q/k/v and o) and mlp_bias.
void ReadLlamaBiases(const FieldReader& f, ModelConfig& c) {
  c.qkv_bias = c.o_bias = f.Bool("attention_bias", false);
  c.mlp_bias = f.Bool("mlp_bias", false);
}

void RefuseQwenSlidingWindow(const FieldReader& f) {
  if (f.Bool("use_sliding_window", false))
    Fail(f.file(),
         "use_sliding_window=true is not supported (sliding attention on some layers only)");
}

void ReadLlama(const FieldReader& f, ModelConfig& c) {
  RequireSilu(f);
  ReadLlamaBiases(f, c);
}

void ReadMistral(const FieldReader& f, ModelConfig& c) {
  ReadLlama(f, c);
  c.sliding_window = f.PositiveInt("sliding_window", 0);
}

void ReadQwen2(const FieldReader& f, ModelConfig& c) {
  RequireSilu(f);
  RefuseQwenSlidingWindow(f);
  c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
}

void ReadQwen3(const FieldReader& f, ModelConfig& c) {
  ReadLlama(f, c);
  RefuseQwenSlidingWindow(f);
  c.qk_norm = true;  // per-head RMSNorm of queries and keys before RoPE
}

void ReadPhi3(const FieldReader& f, ModelConfig& c) {
  RequireSilu(f);  // Phi-3's projections have no biases, whatever attention_bias says
  c.sliding_window = f.PositiveInt("sliding_window", 0);
  c.fused_qkv = c.fused_gate_up = true;
}

// A soft-cap field: absent takes the config class's default, null turns it off.
double SoftCap(const FieldReader& f, const char* key, double fallback) {
  if (!f.Written(key)) return fallback;
  return f.Has(key) ? f.PositiveNumber(key, fallback) : 0.0;
}

// Which layers slide: config "layer_types" (a list of "sliding_attention" / "full_attention"),
// else every `pattern`-th layer is global ((i + 1) % pattern == 0), the rest slide.
void ReadLayerWindows(const FieldReader& f, std::int64_t pattern, ModelConfig& c) {
  const std::int64_t window = f.PositiveInt("sliding_window", 4096);
  c.layer_window.assign(static_cast<std::size_t>(c.num_hidden_layers), 0);
  if (f.Has("layer_types")) {
    const json& types = f.doc()["layer_types"];
    if (!types.is_array() || static_cast<std::int64_t>(types.size()) != c.num_hidden_layers)
      Fail(f.file(), "layer_types must list one attention kind per layer");
    for (std::size_t l = 0; l < types.size(); ++l) {
      const std::string kind = types[l].is_string() ? types[l].get<std::string>() : "";
      if (kind != "sliding_attention" && kind != "full_attention")
        Fail(f.file(), "layer_types[" + std::to_string(l) + "] is " + types[l].dump() +
                           " (sliding_attention or full_attention)");
      c.layer_window[l] = kind == "sliding_attention" ? window : 0;
    }
    return;
  }
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l)
    c.layer_window[static_cast<std::size_t>(l)] = (l + 1) % pattern == 0 ? 0 : window;
}

// What Gemma 2 and Gemma 3 share: GeGLU, (1 + w) norms around both sublayers, scaled embeddings
// and query_pre_attn_scalar.
void ReadGemmaLayer(const FieldReader& f, ModelConfig& c) {
  const std::string act =
      f.String("hidden_activation", f.String("hidden_act", "gelu_pytorch_tanh"));
  if (act != "gelu_pytorch_tanh")
    Fail(f.file(), "hidden_activation '" + act + "' is not supported (Gemma: gelu_pytorch_tanh)");
  c.mlp_activation = MlpActivation::kGeluTanh;
  c.norm_offset = 1.0;
  c.sandwich_norms = true;
  c.scale_embeddings = true;
  c.query_pre_attn_scalar = f.PositiveNumber("query_pre_attn_scalar", 256);
  c.qkv_bias = c.o_bias = f.Bool("attention_bias", false);
}

void ReadGemma2(const FieldReader& f, ModelConfig& c) {
  ReadGemmaLayer(f, c);
  c.attn_logit_softcap = SoftCap(f, "attn_logit_softcapping", 50.0);
  c.final_logit_softcap = SoftCap(f, "final_logit_softcapping", 30.0);
  ReadLayerWindows(f, 2, c);
}

void ReadGemma3(const FieldReader& f, ModelConfig& c) {
  ReadGemmaLayer(f, c);
  c.qk_norm = true;
  c.attn_logit_softcap = SoftCap(f, "attn_logit_softcapping", 0.0);
  c.final_logit_softcap = SoftCap(f, "final_logit_softcapping", 0.0);
  ReadLayerWindows(f, f.PositiveInt("sliding_window_pattern", 6), c);
  c.local_rope_theta = f.PositiveNumber("rope_local_base_freq", 10000.0);
  if (c.rope_theta_defaulted) c.rope_theta = 1000000.0;  // Gemma3TextConfig's default
}

constexpr ArchitectureEntry kArchitectures[] = {
    {"llama", 0, false, ReadLlama},
    {"mistral", 0, false, ReadMistral},
    {"qwen2", 0, false, ReadQwen2},
    {"qwen3", 0, false, ReadQwen3},
    {"phi3", 0, false, ReadPhi3},
    {"gemma2", 256, true, ReadGemma2},
    {"gemma3_text", 256, true, ReadGemma3},
    {kPerLayerModelType, 0, false, ReadLlama},
    {kCrossLayerModelType, 0, false, ReadLlama},
};

}  // namespace

const ArchitectureEntry& FindArchitecture(const std::string& model_type, const std::string& file) {
  for (const ArchitectureEntry& a : kArchitectures) {
    if (model_type == a.model_type) return a;
  }
  std::string names;
  for (const ArchitectureEntry& a : kArchitectures)
    names += (names.empty() ? "" : ", ") + std::string(a.model_type);
  std::string hint;
  if (model_type == "gemma3")
    hint =
        "; gemma3 is Gemma 3's image-text model: kvfold reads the text model, model_type "
        "gemma3_text, as Gemma 3 1B ships it";
  Fail(file, "unsupported model_type '" + model_type + "' (kvfold supports " + names + ")" + hint);
}

}  // namespace kvfold
