// Fake quantization (quantize, then dequantize) of KV-cache values, as a runtime would store
// them: asymmetric integer groups with a float16 scale and zero point, and FP8 e4m3 with a static
// scale. LibTorch-free; the error bounds are in the comments and checked by the tests.
#pragma once

#include <cstdint>

namespace kvfold {

// Asymmetric round-to-nearest over one group of `n` values x[0], x[stride], ...: scale =
// (max - min) / (2^bits - 1), integer code = round((x - min) / scale), x' = min + code * scale.
// |x - x'| <= scale / 2. A constant group is exact. 1 <= bits <= 16.
void FakeQuantAsymmetric(float* x, std::int64_t n, std::int64_t stride, int bits);

// The same with a given (static) range [lo, hi]; values outside are clamped to it first.
void FakeQuantAsymmetricRange(float* x, std::int64_t n, std::int64_t stride, int bits, float lo,
                              float hi);

// Storage per element of an asymmetric group of `group` values: the code plus a float16 scale
// and zero point shared by the group.
inline double AsymmetricBits(int bits, std::int64_t group) {
  return bits + 32.0 / static_cast<double>(group);
}

// The largest finite e4m3 value (OCP "e4m3fn": no infinities, 448 = 1.75 * 2^8).
inline constexpr float kFp8E4M3Max = 448.0f;

// Rounds to the nearest e4m3 value (ties to even), saturating at +-448: 3 mantissa bits, so the
// relative error is <= 2^-4 for |x| >= 2^-6 (normal numbers) and the absolute error is <= 2^-10
// below (subnormals, spacing 2^-9).
float RoundToFp8E4M3(float x);

// x' = RoundToFp8E4M3(x / scale) * scale for n values (vLLM's static per-tensor/per-head scale).
void FakeQuantFp8(float* x, std::int64_t n, float scale);

}  // namespace kvfold
