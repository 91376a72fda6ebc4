#include "formats/model_config.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>

#include "formats/error.h"
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

// The error `text` (as config.json) is refused with, or "accepted".
std::string message(const std::string& text) {
  try {
    ParseModelConfig(text, "config.json");
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string("accepted");
}

// `text` (as config.json) is refused in one line naming the file and containing `needle`.
void rejects(const std::string& text, const std::string& needle) {
  try {
    ParseModelConfig(text, "config.json");
    FAIL("accepted: " << text);
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).rfind("config.json: ", 0) == 0);
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
  }
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
  rejects(R"({"model_type":"llama","hidden_size":64})",
          "missing required field 'num_hidden_layers'");
  rejects(With(R"("model_type":"gpt2x")"), "unsupported model_type 'gpt2x'");
  rejects(R"({"hidden_size":64})", "missing required field 'model_type'");
  rejects(With(R"("num_key_value_heads":3)"), "not a multiple of num_key_value_heads");
  rejects(With(R"("rope_scaling":{"rope_type":"yarn","factor":2.0})"),
          "rope_scaling type 'yarn' is not supported");
  rejects(With(R"("hidden_act":"gelu")"), "hidden_act");
  rejects(With(R"("head_dim":7)"), "even");
  rejects(With(R"("hidden_size":-6)"), "'hidden_size' must be a positive integer, got -6");
  rejects("{not json", "not valid JSON");
  rejects("[]", "not a JSON object");
  rejects(With(R"("rms_norm_eps":"small")"), "rms_norm_eps");
  // Sizes whose products wrap int64 (2^62 + 8 heads' worth) or exceed any real model.
  rejects(With(R"("head_dim":4611686018427387912)"), "head_dim is too large");
  rejects(With(R"("head_dim":8,"hidden_size":4611686018427387904)"),
          "num_attention_heads x head_dim x hidden_size is too large");
  rejects(With(R"("vocab_size":4611686018427387904)"), "vocab_size x hidden_size is too large");
  rejects(With(R"("max_position_embeddings":9223372036854775807)"),
          "max_position_embeddings x head_dim is too large");
  // Sizes kvfold allocates from before any weight bounds them: fuzz_checkpoint found a
  // head_dim near 2^34 that asked for 88 GB at the RoPE table.
  rejects(With(R"("head_dim":22213890000)"),
          "head_dim is too large (22213890000, over 2^20): the config's sizes are not a real "
          "model's");
  rejects(With(R"("num_hidden_layers":1099511627776)"), "num_hidden_layers is too large");
  rejects(With(R"("num_attention_heads":1048576,"num_key_value_heads":1,"head_dim":2)"),
          "num_attention_heads x head_dim is too large");
  rejects(With(R"("num_attention_heads":4611686018427387904,"num_key_value_heads":1,"head_dim":8)"),
          "num_attention_heads x head_dim is too large");
  CHECK(message(With(R"("num_attention_heads":4096,"num_key_value_heads":1,"head_dim":256)")) ==
        "accepted");
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
  CHECK_NOTHROW(
      ParseModelConfig(With(R"("layer_types":["full_attention","full_attention"])"), "c"));
}

TEST_CASE("rope_scaling: llama3, linear and dynamic as transformers computes them",
          "[config][rope]") {
  // Llama 3.1 8B's block. With head_dim 128 the first frequency (wavelength 2 pi) is kept and the
  // last (wavelength above 8192) is divided by the factor; those between blend.
  const ModelConfig c = ParseModelConfig(
      With(R"("head_dim":128,"rope_theta":500000.0,"max_position_embeddings":131072,
    "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"})"),
      "c");
  CHECK(c.rope_scaling.type == "llama3");
  const std::vector<double> inv =
      RopeInverseFrequencies(c.rope_scaling, c.rope_theta, 128, c.max_position_embeddings, 256);
  REQUIRE(inv.size() == 64);
  CHECK(inv[0] == Approx(1.0).epsilon(1e-12));
  CHECK(inv[63] == Approx(std::pow(500000.0, -126.0 / 128) / 8).epsilon(1e-12));
  for (std::size_t j = 1; j < inv.size(); ++j)
    CHECK(inv[j] < inv[j - 1]);  // blending keeps the order
  // j = 32: wavelength 2 pi 500000^(64/128) ~ 4443, inside [2048, 8192]: blended.
  const double f = std::pow(500000.0, -64.0 / 128), smooth = (8192 * f / (2 * M_PI) - 1) / 3;
  CHECK(inv[32] == Approx((1 - smooth) * f / 8 + smooth * f).epsilon(1e-12));

  const ModelConfig linear =
      ParseModelConfig(With(R"("rope_scaling":{"type":"linear","factor":4.0})"), "c");
  const ModelConfig plain = ParseModelConfig(kMinimal, "c");
  const auto base = RopeInverseFrequencies(plain.rope_scaling, 10000, 8, 2048, 64);
  const auto lin = RopeInverseFrequencies(linear.rope_scaling, 10000, 8, 2048, 64);
  for (std::size_t j = 0; j < base.size(); ++j) CHECK(lin[j] == Approx(base[j] / 4).epsilon(1e-12));
  // dynamic: unchanged up to max_position_embeddings, a larger base beyond.
  const ModelConfig dyn =
      ParseModelConfig(With(R"("rope_scaling":{"rope_type":"dynamic","factor":2.0})"), "c");
  CHECK(RopeInverseFrequencies(dyn.rope_scaling, 10000, 8, 2048, 2048) == base);
  const auto longer = RopeInverseFrequencies(dyn.rope_scaling, 10000, 8, 2048, 4096);
  const double new_base = 10000 * std::pow(2.0 * 4096 / 2048 - 1, 8.0 / 6);
  CHECK(longer[1] == Approx(1 / std::pow(new_base, 2.0 / 8)).epsilon(1e-12));
  // transformers v5 writes theta and scaling together as rope_parameters.
  const ModelConfig v5 = ParseModelConfig(
      With(R"("rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":123.0})"), "c");
  CHECK(v5.rope_theta == 123.0);
  CHECK(v5.rope_scaling.type == "linear");
  CHECK_FALSE(v5.rope_theta_defaulted);
  CHECK(plain.rope_theta_defaulted);  // said by inspect, not silent
}

TEST_CASE("unsupported rope settings and architectures are refused by name", "[config][rope]") {
  CHECK_THAT(message(With(R"("rope_scaling":{"rope_type":"yarn","factor":4.0})")),
             Catch::StartsWith("config.json: rope_scaling type 'yarn' is not supported"));
  CHECK_THAT(
      message(With(R"("rope_scaling":{"type":"longrope","short_factor":[1],"long_factor":[1]})")),
      Catch::Contains("rope_scaling longrope is supported on model_type phi3 only, not llama"));
  CHECK_THAT(message(With(R"("rope_scaling":{"rope_type":"llama3","factor":8.0})")),
             Catch::Contains("rope_scaling needs 'low_freq_factor'"));
  CHECK(message(With(R"("partial_rotary_factor":0.5)")) ==
        "config.json: partial_rotary_factor 0.5 is not supported (model_type llama applies RoPE to "
        "the whole head)");
  CHECK(message(With(R"("partial_rotary_factor":1.0)")) == "accepted");
  CHECK_THAT(message(With(R"("model_type":"gemma")")),
             Catch::Contains("unsupported model_type 'gemma'"));
  CHECK_THAT(message(With(R"("model_type":"qwen3","use_sliding_window":true)")),
             Catch::Contains("use_sliding_window"));
}

TEST_CASE("phi3: fused projections, partial rotary and longrope as transformers reads them",
          "[config][rope]") {
  // Phi-4-mini's geometry: head_dim 128, 96 channels rotated, longrope from a 4096 context.
  std::string factors = "[1";
  for (int j = 1; j < 48; ++j) factors += "," + std::to_string(1 + j);
  factors += "]";
  const std::string phi4 =
      With(R"("model_type":"phi3","hidden_size":3072,"num_attention_heads":24,)"
           R"("num_key_value_heads":8,"max_position_embeddings":131072,)"
           R"("partial_rotary_factor":0.75,"sliding_window":262144,)"
           R"("rope_scaling":{"type":"longrope","short_factor":)" +
           factors + R"(,"long_factor":)" + factors + "}");
  const ModelConfig c = ParseModelConfig(phi4, "config.json");
  CHECK(c.head_dim == 128);
  CHECK(c.rotary_dim == 96);
  CHECK(c.PartialRotary());
  CHECK(c.fused_qkv);
  CHECK(c.fused_gate_up);
  CHECK(c.sliding_window == 262144);
  CHECK(c.rope_scaling.original_max_position_embeddings == 4096);  // Phi3Config's default
  // transformers: sqrt(1 + ln(131072 / 4096) / ln(4096))
  CHECK(RopeCosSinScale(c) == Approx(std::sqrt(1 + std::log(32.0) / std::log(4096.0))));
  const std::vector<double> f = RopePairFrequencies(c, 16);
  REQUIRE(f.size() == 64);
  CHECK(f[1] == Approx(1.0 / (2 * std::pow(10000.0, 2.0 / 96))));  // short factor 2 at j = 1
  CHECK(f[47] > 0);
  CHECK(f[48] == 0);  // the pass-through pairs do not turn
  CHECK(f[63] == 0);
  CHECK(RopePairFrequencies(c, 5000)[1] == Approx(f[1]));  // equal factors here: long = short

  const std::string phi = R"("model_type":"phi3",)";
  CHECK(ParseModelConfig(With(phi + R"("partial_rotary_factor":0.3)"), "c").rotary_dim ==
        2);  // int(8 x 0.3), as transformers rounds
  CHECK(message(With(phi + R"("partial_rotary_factor":0.1)")) ==
        "config.json: partial_rotary_factor 0.1 with head_dim 8 gives 0 rotary channels (must be "
        "even, at least 2 and at most head_dim)");
  CHECK_THAT(message(With(phi + R"("rope_scaling":{"type":"su","short_factor":[1,1],)"
                                R"("long_factor":[1,1]})")),
             Catch::Contains("short_factor has 2 entries; the 8 rotary channels need 4"));
  CHECK_THAT(message(With(phi + R"("rope_scaling":{"type":"longrope","short_factor":[1,1,1,1],)"
                                R"("long_factor":[1,1,1]})")),
             Catch::Contains("short_factor and long_factor differ in length"));
  CHECK_THAT(message(With(phi + R"("rope_scaling":{"type":"longrope","short_factor":[1,1,1,0],)"
                                R"("long_factor":[1,1,1,1]})")),
             Catch::Contains("rope_scaling.short_factor holds 0"));
  CHECK(message(With(phi + R"("rope_scaling":{"type":"longrope","short_factor":[1,1,1,1],)"
                           R"("long_factor":[1,1,1,1]})")) == "accepted");
  CHECK_FALSE(ParseModelConfig(With(phi + R"("attention_bias":true)"), "c").qkv_bias);
}

TEST_CASE("qwen3 has per-head query and key norms", "[config]") {
  const ModelConfig q = ParseModelConfig(With(R"("model_type":"qwen3","head_dim":16)"), "c");
  CHECK(q.qk_norm);
  CHECK_FALSE(q.qkv_bias);
  CHECK_FALSE(ParseModelConfig(kMinimal, "c").qk_norm);
}

TEST_CASE("gemma2 and gemma3_text: transformers' defaults and layer kinds", "[config][gemma]") {
  // Gemma2Config: soft-caps 50 and 30 when absent, every other layer sliding from layer 0,
  // head_dim 256 and tied embeddings by default, (1 + w) norms, GeGLU, scaled embeddings.
  const ModelConfig g2 =
      ParseModelConfig(With(R"("model_type":"gemma2","num_hidden_layers":4,"sliding_window":32,
                              "hidden_activation":"gelu_pytorch_tanh")"),
                       "c");
  CHECK(g2.attn_logit_softcap == 50.0);
  CHECK(g2.final_logit_softcap == 30.0);
  CHECK(g2.layer_window == std::vector<std::int64_t>{32, 0, 32, 0});
  CHECK(g2.WindowOf(0) == 32);
  CHECK(g2.WindowOf(1) == 0);
  CHECK(g2.sliding_window == 0);  // no window for every layer
  CHECK(g2.head_dim == 256);
  CHECK(g2.tie_word_embeddings);
  CHECK(g2.norm_offset == 1.0);
  CHECK(g2.sandwich_norms);
  CHECK(g2.scale_embeddings);
  CHECK(g2.mlp_activation == MlpActivation::kGeluTanh);
  CHECK(g2.AttentionScale() == 1.0 / 16.0);  // query_pre_attn_scalar 256
  CHECK_FALSE(g2.qk_norm);
  CHECK(g2.RopeOf(0).rope_theta == g2.rope_theta);  // one RoPE
  // null turns a soft-cap off.
  const ModelConfig uncapped = ParseModelConfig(
      With(R"("model_type":"gemma2","attn_logit_softcapping":null,"final_logit_softcapping":null)"),
      "c");
  CHECK(uncapped.attn_logit_softcap == 0);
  CHECK(uncapped.final_logit_softcap == 0);

  // Gemma3TextConfig: a global layer where (i + 1) % pattern == 0, sliding layers on
  // rope_local_base_freq without the global rope_scaling, q/k norms, rope_theta 1e6 by default.
  const ModelConfig g3 = ParseModelConfig(
      With(R"("model_type":"gemma3_text","num_hidden_layers":7,"sliding_window":512,
              "rope_scaling":{"rope_type":"linear","factor":8.0})"),
      "c");
  CHECK(g3.layer_window == std::vector<std::int64_t>{512, 512, 512, 512, 512, 0, 512});
  CHECK(g3.qk_norm);
  CHECK(g3.rope_theta == 1000000.0);
  CHECK(g3.attn_logit_softcap == 0);
  CHECK(g3.final_logit_softcap == 0);
  CHECK(g3.RopeOf(5).rope_theta == 1000000.0);
  CHECK(g3.RopeOf(5).rope_scaling.type == "linear");
  CHECK(g3.RopeOf(0).rope_theta == 10000.0);
  CHECK(g3.RopeOf(0).rope_scaling.type == "default");
  // An explicit layer_types list wins over the pattern.
  const ModelConfig listed = ParseModelConfig(With(R"("model_type":"gemma3_text","sliding_window":8,
              "layer_types":["full_attention","sliding_attention"])"),
                                              "c");
  CHECK(listed.layer_window == std::vector<std::int64_t>{0, 8});

  rejects(With(R"("model_type":"gemma3_text","layer_types":["full_attention"])"),
          "layer_types must list one attention kind per layer");
  rejects(With(R"("model_type":"gemma3_text","layer_types":["full_attention","chunked"])"),
          "layer_types[1]");
  rejects(With(R"("model_type":"gemma2","hidden_activation":"gelu")"),
          "hidden_activation 'gelu' is not supported");
  rejects(With(R"("model_type":"gemma3")"), "gemma3_text");  // the image-text model's type
}

TEST_CASE("config.json: unknown fields go back as they came, never growing with their depth",
          "[config][hostile]") {
  const ModelConfig m = ParseModelConfig(kMinimal, "c");
  // A real config's nesting (rope_scaling, Nemotron-NAS block_configs) is written as dump(2).
  const std::string real =
      With(R"("rope_scaling":{"rope_type":"llama3","factor":8.0},"block_configs":[{"attention":)"
           R"({"n_heads_in_group":8,"no_op":false},"ffn":{"ffn_mult":1.3}}],"eos_token_id":[1,2])");
  auto doc = nlohmann::ordered_json::parse(real);
  doc["num_key_value_heads"] = m.num_key_value_heads;
  doc["head_dim"] = m.head_dim;
  CHECK(UpdateConfigJson(real, m, "c") == doc.dump(2) + "\n");
  // 400 nested arrays in an unused field: once a 1.8 GB output for a 60 KB config (each line
  // indented by its depth); now bounded by a small multiple of the input.
  const std::string deep = With(R"("unused":)" + std::string(400, '[') + std::string(400, ']'));
  const std::string out = UpdateConfigJson(deep, m, "c");
  CHECK(out.size() < 2 * deep.size());
  CHECK(nlohmann::json::parse(out)["unused"] == nlohmann::json::parse(deep)["unused"]);
  // Deeper than any reader walks safely: refused by name before parsing.
  const std::string deeper =
      With(R"("unused":)" + std::string(100000, '[') + std::string(100000, ']'));
  CHECK_THROWS_WITH(ParseModelConfig(deeper, "config.json"), Catch::StartsWith("config.json: "));
  CHECK_THROWS_WITH(UpdateConfigJson(deeper, m, "config.json"), Catch::StartsWith("config.json: "));
}

TEST_CASE("config.json: RoPE parameters must be normal numbers", "[config][hostile]") {
  CHECK_THROWS_WITH(ParseModelConfig(With(R"("rope_scaling":{"rope_type":"llama3","factor":1e-320,)"
                                          R"("low_freq_factor":1,"high_freq_factor":4,)"
                                          R"("original_max_position_embeddings":8192})"),
                                     "c"),
                    Catch::Contains("rope_scaling.factor must be a positive number"));
  CHECK_THROWS_WITH(ParseModelConfig(With(R"("rope_theta":1e-320)"), "c"),
                    Catch::Contains("'rope_theta' must be a positive number"));
  CHECK_THROWS_WITH(ParseModelConfig(With(R"("rope_theta":1e200,"rope_scaling":)"
                                          R"({"rope_type":"linear","factor":1e300})"),
                                     "c"),
                    Catch::Contains("gives a RoPE frequency of"));
}

namespace {

// A Nemotron-NAS config.json in the layout NVIDIA's checkpoints use: n_heads_in_group per layer,
// the FFN width as ffn_mult.
std::string DeciConfig(const std::string& blocks, const std::string& extra = "") {
  return R"({"model_type":"nemotron-nas","architectures":["DeciLMForCausalLM"],
    "hidden_size":8192,"num_hidden_layers":3,"num_attention_heads":64,"vocab_size":100,)" +
         extra + R"("block_configs":)" + blocks + "}";
}

std::string Block(int group, const std::string& ffn = R"("ffn_mult":5.25)",
                  const std::string& attention_extra = "") {
  return R"({"attention":{"n_heads_in_group":)" + std::to_string(group) + attention_extra +
         R"(,"no_op":false,"replace_with_linear":false,"sparsify":null},"ffn":{)" + ffn +
         R"(,"no_op":false,"replace_with_linear":false}})";
}

}  // namespace

TEST_CASE("nemotron-nas configs carry per-layer KV heads", "[config][per-layer]") {
  // Llama-3.1-70B's width: ffn_mult 5.25 at hidden 8192 is 28672 by DeciLM's rule (vLLM's
  // nemotron_nas.py: int(2 * mult * hidden / 3) rounded up to a multiple of 256).
  CHECK(DeciIntermediateSize(5.25, 8192) == 28672);
  CHECK(DeciIntermediateSize(1.0, 64) == 256);  // 42 rounds up
  const ModelConfig c = ParseModelConfig(
      DeciConfig("[" + Block(8) + "," + Block(64) + "," + Block(2) + "]"), "config.json");
  CHECK(c.PerLayerKvHeads());
  CHECK(c.KvHeads(0) == 8);
  CHECK(c.KvHeads(1) == 1);
  CHECK(c.KvHeads(2) == 32);
  CHECK(c.num_key_value_heads == 32);  // the largest
  CHECK(c.intermediate_size == 28672);
  CHECK(c.KvBytesPerToken(2) == 2 * (8 + 1 + 32) * 128 * 2);
  CHECK(c.KvHeadIndex(2, 3) == 8 + 1 + 3);
  CHECK(c.TotalKvHeads() == 41);
  CHECK(c.ForLayer(2).num_key_value_heads == 32);
  CHECK_FALSE(c.ForLayer(2).PerLayerKvHeads());
  // Equal counts fold away: a plain config.
  const ModelConfig u = ParseModelConfig(
      DeciConfig("[" + Block(8) + "," + Block(8) + "," + Block(8) + "]"), "config.json");
  CHECK_FALSE(u.PerLayerKvHeads());
  CHECK(u.num_key_value_heads == 8);
}

TEST_CASE("per-layer KV heads are written as DeciLM and read back", "[config][per-layer]") {
  ModelConfig c = ParseModelConfig(With(R"("num_key_value_heads":8)"), "c");
  c.SetLayerKvHeads({8, 2});
  const nlohmann::json out = nlohmann::json::parse(UpdateConfigJson(kMinimal, c, "c"));
  CHECK(out["model_type"] == "nemotron-nas");
  CHECK(out["architectures"][0] == "DeciLMForCausalLM");
  CHECK(out["auto_map"]["AutoConfig"] == "configuration_decilm.DeciLMConfig");
  CHECK_FALSE(out.contains("num_key_value_heads"));
  CHECK(out["block_configs"][1]["attention"]["n_heads_in_group"] == 4);
  // 128 is no width ffn_mult can state (multiples of 256): written as intermediate_size.
  CHECK(out["block_configs"][0]["ffn"]["intermediate_size"] == 128);
  CHECK_FALSE(out["block_configs"][0]["ffn"].contains("ffn_mult"));
  const ModelConfig back = ParseModelConfig(out.dump(), "c");
  CHECK(back.layer_kv_heads == std::vector<std::int64_t>{8, 2});
  CHECK(back.intermediate_size == 128);
  // A width of 512 at hidden 256 is ffn_mult 3, as NVIDIA writes it; uniform again: a Llama.
  ModelConfig wide = c;
  wide.hidden_size = 256;
  wide.intermediate_size = 512;
  const nlohmann::json w = nlohmann::json::parse(UpdateConfigJson(kMinimal, wide, "c"));
  CHECK(w["block_configs"][0]["ffn"]["ffn_mult"] == 3.0);
  ModelConfig plain = back;
  plain.SetLayerKvHeads({2, 2});
  const nlohmann::json p = nlohmann::json::parse(UpdateConfigJson(out.dump(), plain, "c"));
  CHECK(p["model_type"] == "llama");
  CHECK_FALSE(p.contains("block_configs"));
  CHECK_FALSE(p.contains("auto_map"));
  CHECK(p["num_key_value_heads"] == 2);
  // What DeciLM cannot hold is refused by name.
  ModelConfig biased = c;
  biased.qkv_bias = true;
  CHECK(DeciConfigProblem(biased).find("biases") != std::string::npos);
  CHECK_THROWS_WITH(UpdateConfigJson(kMinimal, biased, "c"), Catch::Contains("biases"));
}

TEST_CASE("nemotron-nas blocks kvfold cannot run are refused by name", "[config][per-layer]") {
  const std::string b = Block(8);
  rejects(DeciConfig("[" + b + "," + b + "]"), "one entry per layer");
  rejects(DeciConfig(R"("blocks")"), "one entry per layer");
  rejects(DeciConfig("[" + b + "," + b + R"(,{"attention":{"n_heads_in_group":8}}])"),
          "block_configs[2] needs 'attention' and 'ffn'");
  rejects(DeciConfig("[" + b + "," + b + "," + Block(7) + "]"), "does not divide");
  rejects(DeciConfig("[" + b + "," + b + "," + Block(0) + "]"), "n_heads_in_group");
  rejects(DeciConfig("[" + b + "," + b + "," + Block(8, R"("ffn_mult":2.0)") + "]"),
          "different FFN widths");
  rejects(DeciConfig("[" + b + "," + b + "," + Block(8, R"("ffn_mult":1e300)") + "]"),
          "ffn_mult is too large");
  rejects(DeciConfig("[" + b + "," + b + "," + Block(8, R"("ffn_mult":"x")") + "]"), "ffn_mult");
  rejects(DeciConfig("[" + b + "," + b +
                     R"(,{"attention":{"n_heads_in_group":8},"ffn":{"no_op":true}}])"),
          "block_configs[2].ffn.no_op is not supported");
  rejects(DeciConfig("[" + b + "," + b + "," +
                     Block(8, R"("ffn_mult":5.25)", R"(,"window_length":4096)") + "]"),
          "window_length");
  rejects(DeciConfig("[" + b + "," + b + "," + b + "]", R"("intermediate_size":1000,)"),
          "disagrees with block_configs");
}
