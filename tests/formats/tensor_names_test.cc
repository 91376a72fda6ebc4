#include "formats/tensor_names.h"

#include <catch2/catch.hpp>

using namespace kvfold;

TEST_CASE("HF names map to roles and back", "[names]") {
  const TensorId id{TensorRole::kKProj, 3};
  CHECK(HfTensorName(id) == "model.layers.3.self_attn.k_proj.weight");
  auto parsed = ParseHfTensorName("model.layers.3.self_attn.k_proj.weight");
  REQUIRE(parsed.has_value());
  CHECK(*parsed == id);
  CHECK(HfTensorName({TensorRole::kEmbedTokens}) == "model.embed_tokens.weight");
  CHECK(ParseHfTensorName("lm_head.weight")->role == TensorRole::kLmHead);
  CHECK_FALSE(ParseHfTensorName("model.layers.x.self_attn.k_proj.weight").has_value());
  CHECK_FALSE(ParseHfTensorName("model.layers.1.self_attn.rotary_emb.inv_freq").has_value());
  CHECK(std::string(RoleName(TensorRole::kQProj)) == "wq");
}

TEST_CASE("every required tensor's name parses back to itself", "[names]") {
  ModelConfig c;
  c.hidden_size = 64;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 96;
  c.vocab_size = 50;
  c.qkv_bias = true;
  c.mlp_bias = true;
  const auto ids = RequiredTensors(c);
  CHECK(ids.size() == 3 + 3 * (9 + 3 + 3));  // embed, norm, lm_head; per layer 9 + qkv + mlp biases
  for (const auto& id : ids) {
    auto back = ParseHfTensorName(HfTensorName(id));
    REQUIRE(back.has_value());
    CHECK(*back == id);
  }
  CHECK(ExpectedShape({TensorRole::kQProj, 0}, c) == std::vector<std::int64_t>{128, 64});
  CHECK(ExpectedShape({TensorRole::kKProj, 0}, c) == std::vector<std::int64_t>{32, 64});
  CHECK(ExpectedShape({TensorRole::kOProj, 0}, c) == std::vector<std::int64_t>{64, 128});
  CHECK(ExpectedShape({TensorRole::kDownProj, 0}, c) == std::vector<std::int64_t>{64, 96});
}
