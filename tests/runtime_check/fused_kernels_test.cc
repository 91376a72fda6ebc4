#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
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
