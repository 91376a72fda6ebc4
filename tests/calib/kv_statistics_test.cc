// KvStatisticsCollector's second moments against a float64 sum over the same rows.
#include "calib/kv_statistics.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

using namespace kvfold;

TEST_CASE("the value and key moments are X^T X summed over batches, at a width of several tiles",
          "[moments]") {
  // 5 KV heads of 30: width 150, two whole 64-wide tiles of the mirroring and a partial one, so
  // an element added twice, skipped, or mirrored onto the wrong side shows.
  const std::int64_t kv = 5, d = 30, dim = kv * d, tokens = 24;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  KvStatisticsCollector collector(kStatValue | kStatKeyPreRope, 1, kv, d),
      taken(kStatValue | kStatKeyPreRope, 1, kv, d);  // read by TakeLayer instead
  std::vector<double> expected(static_cast<std::size_t>(dim * dim), 0.0);
  std::vector<std::vector<float>> batches;
  for (int batch = 0; batch < 2; ++batch) {
    std::vector<float> x(static_cast<std::size_t>(tokens * dim));
    for (float& v : x) v = normal(rng);
    for (std::int64_t r = 0; r < tokens; ++r) {
      for (std::int64_t i = 0; i < dim; ++i) {
        for (std::int64_t j = 0; j < dim; ++j)
          expected[i * dim + j] += double(x[r * dim + i]) * double(x[r * dim + j]);
      }
    }
    AttentionCapture capture;
    capture.value = {x.data(), {1, tokens, kv, d}};
    capture.key_pre_rope = {x.data(), {1, tokens, kv, d}};
    collector.Observe(capture);
    taken.Observe(capture);
  }
  const LayerKvStatistics& layer = collector.statistics().layers.at(0);
  REQUIRE(layer.value.size() == expected.size());
  for (std::int64_t i = 0; i < dim; ++i) {
    for (std::int64_t j = 0; j < dim; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * dim + j);
      INFO("(" << i << ", " << j << ")");
      // float32 products summed over 24 rows in float32 (ssyrk): ~1e-6 of the terms' size (~1
      // here, 24 of them); a doubled or missing batch is off by ~1.
      REQUIRE(std::abs(layer.value[at] - expected[at]) < 1e-4);
      // Mirrored, not computed twice: the two sides are the same double.
      REQUIRE(layer.value[at] == layer.value[static_cast<std::size_t>(j * dim + i)]);
      REQUIRE(layer.key_pre_rope[at] == layer.value[at]);
    }
  }
  // The same sums, mirrored on the way out of TakeLayer (the layer sweep's path).
  const LayerKvStatistics took = taken.TakeLayer(0);
  CHECK(took.value == layer.value);
  CHECK(took.key_pre_rope == layer.key_pre_rope);
}
