#include "calib/quantizers.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

using namespace kvfold;

TEST_CASE("asymmetric fake quantization stays within half a step", "[quant]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0, 3);
  for (int bits : {2, 3, 4, 8}) {
    INFO("bits " << bits);
    std::vector<float> x(64);
    for (auto& v : x) v = n(rng);
    std::vector<float> q = x;
    FakeQuantAsymmetric(q.data(), 64, 1, bits);
    const float lo = *std::min_element(x.begin(), x.end()),
                hi = *std::max_element(x.begin(), x.end());
    const double step = (double(hi) - lo) / (std::ldexp(1.0, bits) - 1);
    std::vector<float> levels;
    for (std::size_t i = 0; i < x.size(); ++i) {
      CHECK(std::abs(double(q[i]) - x[i]) <= step / 2 + 1e-6);
      levels.push_back(q[i]);
    }
    std::sort(levels.begin(), levels.end());
    levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
    CHECK(levels.size() <= (1u << bits));
    CHECK(q[static_cast<std::size_t>(std::min_element(x.begin(), x.end()) - x.begin())] ==
          lo);  // the minimum is a level
  }
  std::vector<float> constant(5, 2.5f);
  FakeQuantAsymmetric(constant.data(), 5, 1, 2);
  CHECK(constant == std::vector<float>(5, 2.5f));
  // Strided groups (a channel of a [T, d] block) and a static range that clamps.
  std::vector<float> block = {0, 10, 1, 20, 2, 30};  // channel 0: 0 1 2; channel 1: 10 20 30
  FakeQuantAsymmetric(block.data(), 3, 2, 1);
  // 1 bit on channel 0 only: levels {min, max}, the middle ties to even (down); channel 1
  // untouched.
  CHECK(block == std::vector<float>{0, 10, 0, 20, 2, 30});
  std::vector<float> wide = {-5, 0.5f, 5};
  FakeQuantAsymmetricRange(wide.data(), 3, 1, 2, -1, 2);  // levels -1, 0, 1, 2
  CHECK(wide ==
        std::vector<float>{-1, 1, 2});  // 0.5 sits halfway between levels 0 and 1: to even (code 2)
  CHECK(AsymmetricBits(4, 32) == 5.0);
}

TEST_CASE("FP8 e4m3: representable values survive, rounding is to nearest even, 448 saturates",
          "[quant]") {
  for (float v :
       {0.0f, 1.0f, 1.75f, 448.0f, 416.0f, 240.0f, 0.015625f, 0.001953125f, -3.5f, -448.0f}) {
    INFO(v);
    CHECK(RoundToFp8E4M3(v) == v);
  }
  CHECK(RoundToFp8E4M3(1.0625f) == 1.0f);    // halfway between 1 and 1.125: to the even mantissa
  CHECK(RoundToFp8E4M3(1.1875f) == 1.25f);   // halfway between 1.125 and 1.25: to 1.25
  CHECK(RoundToFp8E4M3(1000.0f) == 448.0f);  // saturates (e4m3fn has no infinity)
  CHECK(RoundToFp8E4M3(-1e9f) == -448.0f);
  CHECK(RoundToFp8E4M3(440.0f) == 448.0f);
  CHECK(RoundToFp8E4M3(0.0009765625f) == 0.0f);  // half the smallest subnormal: ties to 0
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> log2(-12, 8.7f);
  for (int i = 0; i < 20000; ++i) {
    const float x = std::exp2(log2(rng)) * (i % 2 ? 1.0f : -1.0f);
    const float r = RoundToFp8E4M3(x);
    if (std::abs(x) >= 0.015625f) {
      CHECK(std::abs(r - x) <= std::abs(x) * 0.0625f + 1e-12f);  // 2^-4 relative for normals
    } else {
      CHECK(std::abs(r - x) <= 0.0009765625f + 1e-12f);  // 2^-10 absolute for subnormals
    }
  }
}

TEST_CASE("FP8 static scale amax/448: the amax survives, everything stays in range", "[quant]") {
  std::vector<float> x = {0.3f, -7.25f, 2.0f, 7.25f, -0.01f};
  const float amax = 7.25f, scale = amax / kFp8E4M3Max;
  std::vector<float> q = x;
  FakeQuantFp8(q.data(), static_cast<std::int64_t>(q.size()), scale);
  CHECK(q[1] == Approx(-amax).epsilon(1e-6));
  CHECK(q[3] == Approx(amax).epsilon(1e-6));
  for (std::size_t i = 0; i < x.size(); ++i)
    CHECK(std::abs(q[i] - x[i]) <= std::abs(x[i]) * 0.0625f + scale * 0.001f);
}
