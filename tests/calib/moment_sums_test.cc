// Sums of outer products (calib/moment_sums.h) against a float64 triple loop.
#include "calib/moment_sums.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace kvfold {

TEST_CASE("AddCrossMoment adds a^T b into a strided accumulator, in row-major order", "[moments]") {
  constexpr std::int64_t kRows = 9, kDim = 5,
                         kStride = 7;  // a wider accumulator, as kv_statistics'
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> a(kRows * kDim), b(kRows * kDim);
  for (float& v : a) v = normal(rng);
  for (float& v : b) v = normal(rng);
  std::vector<double> acc(kDim * kStride, 0.5);  // a sum already there, and columns not touched
  std::vector<float> scratch;
  for (int call = 0; call < 2; ++call)
    AddCrossMoment(a.data(), b.data(), kRows, kDim, scratch, acc.data(), kStride);
  for (std::int64_t i = 0; i < kDim; ++i) {
    for (std::int64_t j = 0; j < kStride; ++j) {
      double expected = 0.5;
      for (std::int64_t r = 0; j < kDim && r < kRows; ++r)
        expected += 2.0 * double(a[r * kDim + i]) * double(b[r * kDim + j]);
      INFO("(" << i << ", " << j << ")");
      // float32 products summed over 9 rows in float32: ~1e-6 relative of the terms' size (~3
      // here); a transposed or misplaced element is off by O(1).
      CHECK(std::abs(acc[i * kStride + j] - expected) < 1e-4);
    }
  }
}

}  // namespace kvfold
