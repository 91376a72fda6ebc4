#include <catch2/catch.hpp>
#include <cmath>

#include "formats/checkpoint.h"
#include "formats/error.h"
#include "runtime_check/reference_model.h"
#include "tests/test_support.h"

using namespace kvfold;
using kvfold::test::SharedPath;

namespace {

// Records shapes, and checks invariants of the captured tensors as they arrive.
class CheckingObserver : public LayerObserver {
 public:
  unsigned Wants(int layer) const override {
    return layer == 1 ? (kCaptureAttnInput | kCaptureKeyPreRope | kCaptureKeyPostRope |
                         kCaptureQueryPreRope | kCaptureQueryPostRope | kCaptureValue)
                      : 0u;
  }
  void Observe(const AttentionCapture& c) override {
    ++calls;
    layer = c.layer;
    input_shape = c.attn_input.shape;
    key_shape = c.key_post_rope.shape;
    query_shape = c.query_post_rope.shape;
    const std::int64_t B = key_shape[0], T = key_shape[1], KV = key_shape[2], d = key_shape[3];
    // RoPE rotates: the L2 norm of every key is unchanged, and position 0 is not rotated.
    for (std::int64_t i = 0; i < B * T * KV; ++i) {
      const std::int64_t position = (i / KV) % T;
      double pre = 0, post = 0;
      for (std::int64_t j = 0; j < d; ++j) {
        pre += std::pow(c.key_pre_rope.data[i * d + j], 2);
        post += std::pow(c.key_post_rope.data[i * d + j], 2);
      }
      worst_norm_change = std::max(worst_norm_change, std::abs(std::sqrt(pre) - std::sqrt(post)));
      if (position == 0) {
        for (std::int64_t j = 0; j < d; ++j) {
          position0_equal &= c.key_pre_rope.data[i * d + j] == c.key_post_rope.data[i * d + j];
        }
      } else {
        rotated_somewhere |= c.key_pre_rope.data[i * d] != c.key_post_rope.data[i * d];
      }
    }
    CHECK(c.value.size() == c.key_pre_rope.size());
    keys_post.assign(c.key_post_rope.data, c.key_post_rope.data + c.key_post_rope.size());
    queries_post.assign(c.query_post_rope.data, c.query_post_rope.data + c.query_post_rope.size());
  }
  std::vector<float> keys_post, queries_post;
  int calls = 0;
  int layer = -1;
  std::vector<std::int64_t> input_shape, key_shape, query_shape;
  double worst_norm_change = 0;
  bool position0_equal = true;
  bool rotated_somewhere = false;
};

}  // namespace

TEST_CASE("the layer observer sees exactly what it asked for", "[runtime][observer][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  const auto rt = ReferenceModel::Load(ck, {"cpu", 2});
  std::vector<std::int32_t> tokens(2 * 16);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<std::int32_t>(3 + i * 7 % 500);
  CheckingObserver obs;
  rt->Observe(tokens, 2, obs);
  CHECK(obs.calls == 1);
  CHECK(obs.layer == 1);
  CHECK(obs.input_shape == std::vector<std::int64_t>{2, 16, 64});
  CHECK(obs.key_shape == std::vector<std::int64_t>{2, 16, 4, 8});
  CHECK(obs.query_shape == std::vector<std::int64_t>{2, 16, 8, 8});
  CHECK(obs.worst_norm_change < 1e-5);
  CHECK(obs.position0_equal);
  CHECK(obs.rotated_somewhere);

  // Observing does not change the logits.
  std::vector<std::int32_t> one(tokens.begin(), tokens.begin() + 16);
  CheckingObserver obs2;
  CHECK(rt->Logits(one, &obs2) == rt->Logits(one));
  CHECK_THROWS_AS(rt->Observe(tokens, 3, obs), Error);

  // The ATen path captures the same tensors in the same layout.
  RuntimeOptions aten_options;
  aten_options.fused_cpu_kernels = false;
  const auto aten = ReferenceModel::Load(ck, aten_options);
  CheckingObserver aten_obs;
  aten->Observe(tokens, 2, aten_obs);
  REQUIRE(aten_obs.keys_post.size() == obs.keys_post.size());
  for (std::size_t i = 0; i < obs.keys_post.size(); ++i) {
    REQUIRE(std::abs(aten_obs.keys_post[i] - obs.keys_post[i]) <
            1e-5 * (1 + std::abs(obs.keys_post[i])));
  }
  for (std::size_t i = 0; i < obs.queries_post.size(); ++i) {
    REQUIRE(std::abs(aten_obs.queries_post[i] - obs.queries_post[i]) <
            1e-5 * (1 + std::abs(obs.queries_post[i])));
  }
}

TEST_CASE("devices: unknown names and a missing CUDA fail cleanly", "[runtime][device][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  CHECK_THROWS_WITH(ReferenceModel::Load(ck, {"tpu", 0}), Catch::Contains("unknown device"));
  try {
    ReferenceModel::Load(ck, {"cuda", 0});
  } catch (const Error& e) {
    // No CUDA in this LibTorch or on this machine: the error must say so in one line.
    INFO(e.what());
    CHECK(std::string(e.what()).find("CUDA") != std::string::npos);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
}

// Hidden ([.]): scripts/cuda_tests.sh runs it where a CUDA device is usable, and CTest reports
// the `cuda` test as skipped, with the reason, everywhere else.
TEST_CASE("devices: CUDA matches CPU", "[.][cuda][shared]") {
  const Checkpoint ck = OpenCheckpoint(SharedPath("models/stories260K"));
  const auto gpu = ReferenceModel::Load(ck, {"cuda", 0});
  const auto cpu = ReferenceModel::Load(ck, {"cpu", 0});
  const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 10, 33};
  const auto a = cpu->Logits(ids), b = gpu->Logits(ids);
  REQUIRE(a.size() == b.size());
  // TF32 is off in LibTorch by default; 1e-3 covers float32 reassociation over 5 layers.
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(std::abs(a[i] - b[i]) < 1e-3);
}
