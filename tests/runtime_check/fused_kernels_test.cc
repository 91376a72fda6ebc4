#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "runtime_check/attention_cpu.h"
#include "runtime_check/kv_cache_policy.h"
#include "runtime_check/reference_model.h"
#include "tests/runtime_check/runtime_test_support.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::MaxAbsDiff;
using kvfold::test::SharedPath;
using kvfold::test::SomeTokens;

// Two independent implementations of RoPE + causal softmax attention: ATen ops on the full
// masked score matrix, and the fused kernels on its visible half.
TEST_CASE("fused CPU attention equals the ATen path", "[runtime][kernels][shared]") {
  for (const char* model : {"stories260K", "mini-mha"}) {
    INFO(model);
    const Checkpoint ck = OpenCheckpoint(SharedPath(std::string("models/") + model));
    const auto ids = SomeTokens(200, static_cast<int>(ck.config.vocab_size));
    CHECK(MaxAbsDiff(test::LoadModel(ck, true)->Logits(ids),
                     test::LoadModel(ck, false)->Logits(ids)) < 2e-5);
  }
}

TEST_CASE("a Mistral sliding window hides distant keys in both paths",
          "[runtime][kernels][shared]") {
  // mini-mha's weights under a Mistral config with a 16-token window.
  test::TempDir dir;
  const std::string src = SharedPath("models/mini-mha");
  std::string config = ReadFileToString(src + "/config.json");
  config.replace(config.find("\"llama\""), 7, "\"mistral\"");
  config.insert(config.rfind('}'), ", \"sliding_window\": 16");
  test::WriteBytes(dir.File("config.json"), config);
  REQUIRE(::symlink((src + "/model.safetensors").c_str(), dir.File("model.safetensors").c_str()) ==
          0);
  const Checkpoint windowed = OpenCheckpoint(dir.path());
  REQUIRE(windowed.config.sliding_window == 16);
  const Checkpoint full = OpenCheckpoint(src);

  const auto ids = SomeTokens(64, 2048);
  const auto fused = test::LoadModel(windowed, true)->Logits(ids);
  const auto aten = test::LoadModel(windowed, false)->Logits(ids);
  CHECK(MaxAbsDiff(fused, aten) < 2e-5);
  // The first 16 positions see the same keys with or without the window; later ones do not.
  const auto unwindowed = test::LoadModel(full, true)->Logits(ids);
  const std::size_t V = 2048;
  const std::vector<float> head(fused.begin(), fused.begin() + 16 * V);
  CHECK(MaxAbsDiff(head, {unwindowed.begin(), unwindowed.begin() + 16 * V}) < 1e-5);
  CHECK(MaxAbsDiff(fused, unwindowed) > 1e-2);
  // Position 16 is the first to lose a key (key 0) with a window of exactly 16: it must differ.
  // With 17 it would still match, with 15 position 15 would already differ (checked above).
  const std::vector<float> row16(fused.begin() + 16 * V, fused.begin() + 17 * V);
  CHECK(MaxAbsDiff(row16, {unwindowed.begin() + 16 * V, unwindowed.begin() + 17 * V}) > 1e-3);
}

TEST_CASE("stored-key scores gain the cache's score extras (llama.cpp's q8_1 block sums)",
          "[runtime][kernels]") {
  // One sequence, one head, two tokens, head_dim 32; every key read from the stored copy, each
  // score plus dot(query extras, key extras) over two extras.
  const QkvLayout L{1, 2, 1, 1, 32};
  std::vector<float> qkv(static_cast<std::size_t>(L.tokens * L.row()));
  for (std::size_t i = 0; i < qkv.size(); ++i) qkv[i] = std::sin(0.37f * static_cast<float>(i));
  const std::uint8_t read = kCacheVisible | kCacheQuantKey;
  const std::vector<std::uint8_t> codes = {read, kCacheHidden, read, read};
  std::vector<float> keys(64), values(64);
  for (std::int64_t t = 0; t < 2; ++t) {
    for (std::int64_t c = 0; c < 32; ++c) {
      keys[static_cast<std::size_t>(t * 32 + c)] =
          qkv[static_cast<std::size_t>(t * L.row() + 32 + c)];
      values[static_cast<std::size_t>(t * 32 + c)] =
          qkv[static_cast<std::size_t>(t * L.row() + 64 + c)];
    }
  }
  const std::vector<float> query_extras = {0.5f, -1.0f, 2.0f, 0.25f},
                           key_extras = {1.0f, 3.0f, -2.0f, 0.5f};
  CacheLayer cache{codes.data(),        keys.data(),      nullptr, nullptr, 2,
                   query_extras.data(), key_extras.data()};
  const float scale = 0.125f;
  std::vector<float> ctx(64), plain(64);
  CausalAttention(qkv.data(), L, scale, 0, &cache, ctx.data(), 0, 1);
  cache.extras = 0;
  CausalAttention(qkv.data(), L, scale, 0, &cache, plain.data(), 0, 1);
  // Query 1 by hand: softmax over keys 0 and 1 of scale (q.k + qe.ke), then the values.
  double s[2];
  for (int j = 0; j < 2; ++j) {
    double dot = 0;
    for (int c = 0; c < 32; ++c)
      dot += double(qkv[static_cast<std::size_t>(L.row() + c)]) *
             keys[static_cast<std::size_t>(j * 32 + c)];
    dot += double(query_extras[2]) * key_extras[static_cast<std::size_t>(j * 2)] +
           double(query_extras[3]) * key_extras[static_cast<std::size_t>(j * 2 + 1)];
    s[j] = scale * dot;
  }
  const double m = std::max(s[0], s[1]), p0 = std::exp(s[0] - m), p1 = std::exp(s[1] - m);
  double worst = 0, moved = 0;
  for (int c = 0; c < 32; ++c) {
    const double want =
        (p0 * values[static_cast<std::size_t>(c)] + p1 * values[static_cast<std::size_t>(32 + c)]) /
        (p0 + p1);
    worst = std::max(worst, std::fabs(ctx[static_cast<std::size_t>(32 + c)] - want));
    moved = std::max(moved, double(std::fabs(ctx[static_cast<std::size_t>(32 + c)] -
                                             plain[static_cast<std::size_t>(32 + c)])));
  }
  CHECK(worst < 1e-6);  // float32 sums of 32 products of values below 1
  CHECK(moved > 1e-2);  // the extras changed the weights
  // Query 0 reads key 0 alone: its output is value 0 whatever the scores.
  for (int c = 0; c < 32; ++c)
    CHECK(ctx[static_cast<std::size_t>(c)] ==
          Approx(values[static_cast<std::size_t>(c)]).margin(1e-6));
}
