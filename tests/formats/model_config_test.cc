#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "formats/error.h"
#include "formats/model_config.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

namespace {

const char* kMinimal = R"({"model_type":"llama","hidden_size":64,"num_hidden_layers":2,
  "num_attention_heads":8,"intermediate_size":128,"vocab_size":100})";

// kMinimal plus `extra` fields; a repeated key overrides (nlohmann keeps the last one).
std::string With(const std::string& extra) {
  std::string s = kMinimal;
  return s.substr(0, s.size() - 1) + "," + extra + "}";
}

}  // namespace

TEST_CASE("shared configs parse to the documented shapes", "[config][shared]") {
  const ModelConfig mini = LoadModelConfig(SharedPath("models/mini-mha"));
  CHECK(mini.model_type == "llama");
  CHECK(mini.architecture == "LlamaForCausalLM");
  CHECK(mini.hidden_size == 256);
  CHECK(mini.num_hidden_layers == 6);
  CHECK(mini.num_attention_heads == 8);
  CHECK(mini.num_key_value_heads == 8);
  CHECK(mini.head_dim == 32);
  CHECK(mini.tie_word_embeddings);
  CHECK(mini.rms_norm_eps == Approx(1e-5));
  CHECK(mini.KvBytesPerToken(4) == 2 * 6 * 8 * 32 * 4);

  const ModelConfig s = LoadModelConfig(SharedPath("models/stories260K"));
  CHECK(s.num_key_value_heads == 4);
  CHECK(s.head_dim == 8);
  CHECK(s.QueriesPerKvHead() == 2);
}

TEST_CASE("config defaults follow HF", "[config]") {
  const ModelConfig c = ParseModelConfig(kMinimal, "config.json");
  CHECK(c.num_key_value_heads == 8);
  CHECK(c.head_dim == 8);
  CHECK(c.rope_theta == 10000.0);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK_FALSE(c.qkv_bias);
  const ModelConfig q = ParseModelConfig(With(R"("model_type":"qwen2")"), "c");
  CHECK(q.qkv_bias);
  CHECK_FALSE(q.o_bias);
  const ModelConfig e = ParseModelConfig(With(R"("eos_token_id":[7,8])"), "c");
  CHECK(e.eos_token_id == 7);
}

TEST_CASE("bad configs give one clear line", "[config]") {
  auto rejects = [](const std::string& text, const std::string& needle) {
    try {
      ParseModelConfig(text, "config.json");
      FAIL("accepted: " << text);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).rfind("config.json: ", 0) == 0);
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  rejects(R"({"model_type":"llama","hidden_size":64})", "missing required field 'num_hidden_layers'");
  rejects(With(R"("model_type":"gpt2x")"), "unsupported model_type 'gpt2x'");
  rejects(R"({"hidden_size":64})", "missing required field 'model_type'");
  rejects(With(R"("num_key_value_heads":3)"), "not a multiple of num_key_value_heads");
  rejects(With(R"("rope_scaling":{"rope_type":"linear","factor":2.0})"), "rope_scaling");
  rejects(With(R"("hidden_act":"gelu")"), "hidden_act");
  rejects(With(R"("head_dim":7)"), "even");
  rejects(With(R"("hidden_size":-6)"), "'hidden_size' must be a positive integer, got -6");
  rejects("{not json", "not valid JSON");
  rejects("[]", "not a JSON object");
  rejects(With(R"("rms_norm_eps":"small")"), "rms_norm_eps");
  // Sizes whose products wrap int64 (2^62 + 8 heads' worth) or exceed any real model.
  rejects(With(R"("head_dim":4611686018427387912)"), "num_attention_heads x head_dim x hidden_size is too large");
  rejects(With(R"("vocab_size":4611686018427387904)"), "vocab_size x hidden_size is too large");
  rejects(With(R"("max_position_embeddings":9223372036854775807)"), "max_position_embeddings x head_dim is too large");
  // Wrong JSON types inside blocks are named, never a JSON library exception.
  rejects(With(R"("rope_scaling":{"rope_type":5})"), "rope_scaling.rope_type must be a string");
  rejects(With(R"("rope_scaling":{"type":[1]})"), "rope_scaling.type must be a string");
  rejects(With(R"("kvfold_key_reconstruct":{"key_projection_heads":"8"})"), "key_projection_heads");
}

TEST_CASE("an explicit default rope_scaling is accepted", "[config]") {
  CHECK_NOTHROW(ParseModelConfig(With(R"("rope_scaling":{"rope_type":"default"})"), "c"));
  CHECK_NOTHROW(ParseModelConfig(With(R"("rope_scaling":null)"), "c"));
}

TEST_CASE("lckv-llama configs carry the layer sharing and its KV bytes", "[config][cross-layer]") {
  // whyNLP/LCKV's own example layout for 8 layers (configs/llama_tiny_lckv.json).
  const std::string lckv = R"({"model_type":"lckv-llama","hidden_size":64,"num_hidden_layers":8,
    "num_attention_heads":8,"num_key_value_heads":4,"intermediate_size":128,"vocab_size":100,
    "sliding_window":4096,"layer_types":"0_6_6_6_6_6_6_7","forward_passes":5,"backward_passes":1})";
  const ModelConfig c = ParseModelConfig(lckv, "config.json");
  CHECK(c.kv_layer_of == std::vector<std::int64_t>{0, 6, 6, 6, 6, 6, 6, 7});
  CHECK(c.KvLayerCount() == 3);
  CHECK(c.ComputesKv(6));
  CHECK_FALSE(c.ComputesKv(3));
  CHECK(c.AttendsAbove());
  CHECK(c.sliding_window == 0);  // only 's' layers would use it
  CHECK(c.lckv_forward_passes == 5);
  CHECK(c.KvBytesPerToken(2) == 2 * 3 * 4 * 8 * 2);

  // MLKV / CLA layout: every layer reads a layer at or below it.
  ModelConfig m = ParseModelConfig(With(R"("model_type":"lckv-llama","layer_types":"0_0")"), "c");
  CHECK_FALSE(m.AttendsAbove());
  CHECK(m.KvLayerCount() == 1);

  // Written back: the fields both reference repos read.
  const nlohmann::json out = nlohmann::json::parse(UpdateConfigJson(kMinimal, m, "c"));
  CHECK(out["model_type"] == "lckv-llama");
  CHECK(out["architectures"][0] == "LCKVLlamaForCausalLM");
  CHECK(out["layer_types"] == "0_0");
  CHECK(out["num_key_value_layers"] == 1);
  CHECK(out["forward_passes"] == 7);
  CHECK(ParseModelConfig(out.dump(), "c").kv_layer_of == m.kv_layer_of);
}

TEST_CASE("bad layer_types are refused with the reason", "[config][cross-layer]") {
  auto rejects = [](const std::string& extra, const std::string& needle) {
    try {
      ParseModelConfig(With(extra), "config.json");
      FAIL("accepted: " << extra);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  rejects(R"("model_type":"lckv-llama")", "needs 'layer_types'");
  rejects(R"("model_type":"lckv-llama","layer_types":"0")", "1 entries for 2 layers");
  rejects(R"("model_type":"lckv-llama","layer_types":"0_5")", "layer 5 does not exist");
  rejects(R"("model_type":"lckv-llama","layer_types":"1_0")", "does not compute its own K/V");
  rejects(R"("model_type":"lckv-llama","layer_types":"0_1s")", "not supported");
  rejects(R"("model_type":"lckv-llama","layer_types":"0_0","num_key_value_layers":2)", "disagrees");
  rejects(R"("layer_types":"0_0")", "need model_type lckv-llama");
  // transformers' own layer_types (attention kinds per layer) is not cross-layer sharing.
  CHECK_NOTHROW(ParseModelConfig(With(R"("layer_types":["full_attention","full_attention"])"), "c"));
}
