#include "calib/ggml_cache_types.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "formats/dtype.h"
#include "formats/error.h"

namespace kvfold {
namespace {

constexpr int kBlock = 32;
// iq4_nl's 16 levels (ggml-quants.c kvalues_iq4nl).
constexpr std::int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

struct Spec {
  GgmlCacheType type;
  const char* name;
  std::size_t block, bytes;
};
constexpr Spec kSpecs[] = {
    {GgmlCacheType::kF16, "f16", 1, 2},     {GgmlCacheType::kBF16, "bf16", 1, 2},
    {GgmlCacheType::kQ8_0, "q8_0", 32, 34}, {GgmlCacheType::kQ5_1, "q5_1", 32, 24},
    {GgmlCacheType::kQ5_0, "q5_0", 32, 22}, {GgmlCacheType::kQ4_1, "q4_1", 32, 20},
    {GgmlCacheType::kQ4_0, "q4_0", 32, 18}, {GgmlCacheType::kIQ4_NL, "iq4_nl", 32, 18},
};

const Spec& SpecOf(GgmlCacheType type) {
  for (const auto& s : kSpecs) {
    if (s.type == type) return s;
  }
  Fail("ggml", "internal error: unknown cache type");
}

void PutF16(std::uint8_t* p, float v) {
  const std::uint16_t h = F32ToF16(v);
  std::memcpy(p, &h, 2);
}
float GetF16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

// The value of largest magnitude, with its sign (the first one on ties).
float SignedMax(const float* x) {
  float amax = 0, max = 0;
  for (int j = 0; j < kBlock; ++j) {
    if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
  }
  return max;
}

void MinMax(const float* x, float& min, float& max) {
  min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < kBlock; ++j) min = std::min(min, x[j]), max = std::max(max, x[j]);
}

// q4_0 / q5_0: symmetric codes around 2^(bits-1), scale = signed max / -2^(bits-1).
void QuantizeSymmetric(const float* x, std::uint8_t* b, int bits) {
  const int offset = 1 << (bits - 1), top = (1 << bits) - 1;
  const float d = SignedMax(x) / static_cast<float>(-offset);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  PutF16(b, d);
  std::uint8_t* qh = bits == 5 ? b + 2 : nullptr;
  std::uint8_t* qs = b + (bits == 5 ? 6 : 2);
  std::uint32_t high = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    const auto code = [&](float v) {
      return static_cast<std::uint8_t>(
          std::min(top, static_cast<int>(static_cast<std::int8_t>(v * id + offset + 0.5f))));
    };
    const std::uint8_t c0 = code(x[j]), c1 = code(x[j + kBlock / 2]);
    qs[j] = static_cast<std::uint8_t>((c0 & 0x0F) | ((c1 & 0x0F) << 4));
    high |= static_cast<std::uint32_t>((c0 & 0x10) >> 4) << j;
    high |= static_cast<std::uint32_t>((c1 & 0x10) >> 4) << (j + kBlock / 2);
  }
  if (qh) std::memcpy(qh, &high, 4);
}

// q4_1 / q5_1: codes from the block's minimum, scale = (max - min) / (2^bits - 1).
void QuantizeAffine(const float* x, std::uint8_t* b, int bits) {
  float min, max;
  MinMax(x, min, max);
  const float d = (max - min) / static_cast<float>((1 << bits) - 1);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  PutF16(b, d);
  PutF16(b + 2, min);
  std::uint8_t* qs = b + (bits == 5 ? 8 : 4);
  std::uint32_t high = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    const auto code = [&](float v) {
      const float c = (v - min) * id + 0.5f;
      // q4_1 clamps to 15; q5_1's reference does not clamp (its codes cannot exceed 31).
      return bits == 4 ? static_cast<std::uint8_t>(
                             std::min(15, static_cast<int>(static_cast<std::int8_t>(c))))
                       : static_cast<std::uint8_t>(c);
    };
    const std::uint8_t c0 = code(x[j]), c1 = code(x[j + kBlock / 2]);
    qs[j] = static_cast<std::uint8_t>((c0 & 0x0F) | ((c1 & 0x0F) << 4));
    high |= static_cast<std::uint32_t>((c0 & 0x10) >> 4) << j;
    high |= static_cast<std::uint32_t>((c1 & 0x10) >> 4) << (j + kBlock / 2);
  }
  if (bits == 5) std::memcpy(b + 4, &high, 4);
}

void QuantizeQ8_0(const float* x, std::uint8_t* b) {
  float amax = 0;
  for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  PutF16(b, d);
  for (int j = 0; j < kBlock; ++j)
    b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::round(x[j] * id)));
}

int BestIq4nlIndex(float x) {
  if (x <= kIq4nlValues[0]) return 0;
  if (x >= kIq4nlValues[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (x < kIq4nlValues[mid] ? hi : lo) = mid;
  }
  return x - kIq4nlValues[hi - 1] < kIq4nlValues[hi] - x ? hi - 1 : hi;
}

// iq4_nl: 16 non-uniform levels; the scale is the weighted least-squares one (weights x^2) for
// the levels chosen at scale max / -127 (ggml's reference, no further search).
void QuantizeIq4nl(const float* x, std::uint8_t* b) {
  std::uint8_t levels[kBlock] = {};
  float amax = 0, max = 0;
  for (int j = 0; j < kBlock; ++j) {
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
  }
  float d = 0;
  if (amax >= 1e-15f) {
    const float id = 1 / (max / kIq4nlValues[0]);
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < kBlock; ++j) {
      levels[j] = static_cast<std::uint8_t>(BestIq4nlIndex(id * x[j]));
      const float q = kIq4nlValues[levels[j]], w = x[j] * x[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
    d = sumqx / sumq2;
  }
  PutF16(b, d);
  for (int j = 0; j < kBlock / 2; ++j)
    b[2 + j] = static_cast<std::uint8_t>(levels[j] | (levels[j + kBlock / 2] << 4));
}

void DequantizeBlock(GgmlCacheType type, const std::uint8_t* b, float* y) {
  const float d = GetF16(b);
  const auto nibble = [](const std::uint8_t* qs, int j) {
    return j < kBlock / 2 ? qs[j] & 0x0F : qs[j - kBlock / 2] >> 4;
  };
  for (int j = 0; j < kBlock; ++j) {
    switch (type) {
      case GgmlCacheType::kQ8_0:
        y[j] = static_cast<std::int8_t>(b[2 + j]) * d;
        break;
      case GgmlCacheType::kQ4_0:
        y[j] = static_cast<float>(nibble(b + 2, j) - 8) * d;
        break;
      case GgmlCacheType::kQ4_1:
        y[j] = static_cast<float>(nibble(b + 4, j)) * d + GetF16(b + 2);
        break;
      case GgmlCacheType::kQ5_0:
      case GgmlCacheType::kQ5_1: {
        const bool affine = type == GgmlCacheType::kQ5_1;
        std::uint32_t high;
        std::memcpy(&high, b + (affine ? 4 : 2), 4);
        const int code = nibble(b + (affine ? 8 : 6), j) | (((high >> j) & 1) << 4);
        y[j] = affine ? static_cast<float>(code) * d + GetF16(b + 2)
                      : static_cast<float>(code - 16) * d;
        break;
      }
      case GgmlCacheType::kIQ4_NL:
        y[j] = d * kIq4nlValues[nibble(b + 2, j)];
        break;
      default:
        Fail("ggml", "internal error: not a block type");
    }
  }
}

}  // namespace

std::optional<GgmlCacheType> ParseGgmlCacheType(const std::string& name) {
  for (const auto& s : kSpecs) {
    if (name == s.name) return s.type;
  }
  return std::nullopt;
}

const char* GgmlCacheTypeName(GgmlCacheType type) { return SpecOf(type).name; }
std::size_t GgmlBlockSize(GgmlCacheType type) { return SpecOf(type).block; }
std::size_t GgmlBlockBytes(GgmlCacheType type) { return SpecOf(type).bytes; }
double GgmlBitsPerElement(GgmlCacheType type) {
  return 8.0 * static_cast<double>(SpecOf(type).bytes) / static_cast<double>(SpecOf(type).block);
}

std::vector<std::uint8_t> GgmlQuantize(GgmlCacheType type, const float* x, std::size_t n) {
  const Spec& s = SpecOf(type);
  if (n % s.block != 0) Fail("ggml", std::string(s.name) + " needs rows in blocks of 32");
  std::vector<std::uint8_t> out(n / s.block * s.bytes);
  for (std::size_t i = 0; i < n / s.block; ++i) {
    std::uint8_t* b = out.data() + i * s.bytes;
    const float* xb = x + i * s.block;
    switch (type) {
      case GgmlCacheType::kF16:
        PutF16(b, xb[0]);
        break;
      case GgmlCacheType::kBF16: {
        const std::uint16_t h = F32ToBf16(xb[0]);
        std::memcpy(b, &h, 2);
        break;
      }
      case GgmlCacheType::kQ8_0:
        QuantizeQ8_0(xb, b);
        break;
      case GgmlCacheType::kQ5_1:
        QuantizeAffine(xb, b, 5);
        break;
      case GgmlCacheType::kQ5_0:
        QuantizeSymmetric(xb, b, 5);
        break;
      case GgmlCacheType::kQ4_1:
        QuantizeAffine(xb, b, 4);
        break;
      case GgmlCacheType::kQ4_0:
        QuantizeSymmetric(xb, b, 4);
        break;
      case GgmlCacheType::kIQ4_NL:
        QuantizeIq4nl(xb, b);
        break;
    }
  }
  return out;
}

void GgmlDequantize(GgmlCacheType type, const std::uint8_t* bytes, std::size_t n, float* y) {
  const Spec& s = SpecOf(type);
  for (std::size_t i = 0; i < n / s.block; ++i) {
    const std::uint8_t* b = bytes + i * s.bytes;
    if (type == GgmlCacheType::kF16) {
      y[i] = GetF16(b);
    } else if (type == GgmlCacheType::kBF16) {
      std::uint16_t h;
      std::memcpy(&h, b, 2);
      y[i] = Bf16ToF32(h);
    } else {
      DequantizeBlock(type, b, y + i * s.block);
    }
  }
}

std::size_t GgmlScoreExtras(GgmlCacheType key_type, std::size_t n) {
  const bool with_minimum = key_type == GgmlCacheType::kQ4_1 || key_type == GgmlCacheType::kQ5_1;
  return with_minimum ? n / kBlock : 0;
}

void GgmlKeyExtras(GgmlCacheType key_type, const std::uint8_t* bytes, std::size_t n,
                   float* extras) {
  const std::size_t block_bytes = SpecOf(key_type).bytes;
  for (std::size_t b = 0; b < GgmlScoreExtras(key_type, n); ++b)
    extras[b] = GetF16(bytes + b * block_bytes + 2);  // d, then m
}

void GgmlRoundQuery(GgmlCacheType key_type, float* q, std::size_t n, float* extras) {
  if (key_type == GgmlCacheType::kF16 || key_type == GgmlCacheType::kBF16)
    return GgmlRoundTrip(key_type, q, n);
  const bool q8_1 = GgmlScoreExtras(key_type, n) > 0;
  for (std::size_t i = 0; i + kBlock <= n; i += kBlock) {
    float amax = 0;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(q[i + j]));
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    const float d = amax / 127.0f, d16 = F16ToF32(F32ToF16(d));
    int sum = 0;
    for (int j = 0; j < kBlock; ++j) {
      const float c = std::nearbyint(q[i + j] * id);
      sum += static_cast<int>(c);
      q[i + j] = c * d16;
    }
    // q8_1's s: d * sum(codes) in f16, where the exact product has d16 * sum(codes).
    if (q8_1 && extras != nullptr) {
      const float s = F16ToF32(F32ToF16(d * static_cast<float>(sum)));
      extras[i / kBlock] = s - d16 * static_cast<float>(sum);
    }
  }
}

void GgmlRoundTrip(GgmlCacheType type, float* x, std::size_t n) {
  const std::vector<std::uint8_t> bytes = GgmlQuantize(type, x, n);
  GgmlDequantize(type, bytes.data(), n, x);
}

}  // namespace kvfold
