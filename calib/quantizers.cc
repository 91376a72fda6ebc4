#include "calib/quantizers.h"

#include <algorithm>
#include <cmath>

namespace kvfold {

void FakeQuantAsymmetricRange(float* x, std::int64_t n, std::int64_t stride, int bits, float lo,
                              float hi) {
  const double levels = std::ldexp(1.0, bits) - 1;
  const double scale = (double(hi) - lo) / levels;
  for (std::int64_t i = 0; i < n; ++i) {
    float& v = x[i * stride];
    if (!(scale > 0)) {  // a constant group (or an empty range): every value is the one level
      v = lo;
      continue;
    }
    const double clamped = std::min<double>(std::max<double>(v, lo), hi);
    const double code = std::nearbyint((clamped - lo) / scale);
    v = static_cast<float>(lo + std::min(code, levels) * scale);
  }
}

void FakeQuantAsymmetric(float* x, std::int64_t n, std::int64_t stride, int bits) {
  if (n <= 0) return;
  float lo = x[0], hi = x[0];
  for (std::int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  FakeQuantAsymmetricRange(x, n, stride, bits, lo, hi);
}

float RoundToFp8E4M3(float x) {
  if (std::isnan(x)) return x;
  const float a = std::fabs(x);
  if (a >= kFp8E4M3Max) return std::copysign(kFp8E4M3Max, x);
  // Spacing of e4m3 values around a: 2^(e - 3) for normal numbers with exponent e >= -6, and
  // the subnormal spacing 2^-9 below 2^-6.
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
  const int exponent = std::max(e - 1, -6);
  const double spacing = std::ldexp(1.0, exponent - 3);
  const double rounded = std::nearbyint(a / spacing) * spacing;  // ties to even (default mode)
  return std::copysign(static_cast<float>(std::min<double>(rounded, kFp8E4M3Max)), x);
}

void FakeQuantFp8(float* x, std::int64_t n, float scale) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = RoundToFp8E4M3(x[i] / scale) * scale;
}

}  // namespace kvfold
