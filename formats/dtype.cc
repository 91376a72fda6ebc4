#include "formats/dtype.h"

#include <cmath>
#include <cstring>

#include "formats/error.h"

namespace kvfold {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},   {DType::kF32, "F32", 4},        {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8},        {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},          {DType::kU64, "U64", 8},
    {DType::kU32, "U32", 4},   {DType::kU16, "U16", 2},        {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
};

const DTypeInfo& Info(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  Fail("dtype", "internal: unknown enum value");
}

std::uint32_t FloatBits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float BitsFloat(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

std::optional<DType> ParseDType(std::string_view name) {
  for (const auto& info : kDTypes) {
    if (name == info.name) return info.dtype;
  }
  return std::nullopt;
}

const char* DTypeName(DType dtype) { return Info(dtype).name; }
std::size_t DTypeSize(DType dtype) { return Info(dtype).size; }
bool IsFloatingCompute(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16;
}

float Bf16ToF32(std::uint16_t bits) { return BitsFloat(static_cast<std::uint32_t>(bits) << 16); }

std::uint16_t F32ToBf16(float value) {
  std::uint32_t u = FloatBits(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

float F16ToF32(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    if (mant == 0) return BitsFloat(sign);
    // subnormal half: value = mant * 2^-24
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

std::uint16_t F32ToF16(float value) {
  std::uint32_t u = FloatBits(value);
  std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                        // below the smallest normal half
    // Scale into the subnormal range and let float rounding (nearest even) do the work.
    float scaled = BitsFloat(abs) * 16777216.0f;  // * 2^24: units of the smallest subnormal
    return sign | static_cast<std::uint16_t>(std::nearbyint(scaled));
  }
  std::uint32_t mant_round = abs + 0xfffu + ((abs >> 13) & 1u);
  return sign | static_cast<std::uint16_t>((mant_round - 0x38000000u) >> 13);
}

void ConvertToF32(DType dtype, const void* src, std::size_t count, float* dst) {
  const auto* bytes = static_cast<const std::uint8_t*>(src);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, bytes, count * 4);
      return;
    case DType::kBF16:
      // Bf16ToF32 is inlined here and the loop vectorized: under -fPIC only because kvfold
      // builds with -fno-semantic-interposition (CTest inlined_decode checks the binary; a
      // layer of a 7B model is 400 MB of BF16).
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = Bf16ToF32(h);
      }
      return;
    case DType::kF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = F16ToF32(h);
      }
      return;
    default:
      Fail("dtype", std::string("cannot convert ") + DTypeName(dtype) + " to F32");
  }
}

std::optional<std::string> FindUnrepresentable(DType dtype, const float* src, std::size_t count) {
  // Rounding to nearest turns values just above the largest finite one into inf: F16's limit is
  // its largest finite value, 65504; BF16 shares F32's exponent range, so only values within
  // rounding of F32's maximum overflow (the round trip says which).
  const float bf16_max = Bf16ToF32(0x7f7f);
  for (std::size_t i = 0; i < count; ++i) {
    const float x = src[i];
    const char* why = nullptr;
    if (!std::isfinite(x)) {
      why = "not finite";
    } else if (dtype == DType::kF16 && std::fabs(x) > 65504.0f) {
      why = "beyond F16's range of 65504";
    } else if (dtype == DType::kBF16 && std::fabs(x) > bf16_max &&
               !std::isfinite(Bf16ToF32(F32ToBf16(x)))) {
      why = "beyond the dtype's range";
    }
    if (why != nullptr)
      return "element " + std::to_string(i) + " is " + std::to_string(x) + " (" + why + ")";
  }
  return std::nullopt;
}

void ConvertFromF32(DType dtype, const float* src, std::size_t count, void* dst) {
  auto* bytes = static_cast<std::uint8_t*>(dst);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(bytes, src, count * 4);
      return;
    case DType::kBF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h = F32ToBf16(src[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    case DType::kF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h = F32ToF16(src[i]);
        std::memcpy(bytes + 2 * i, &h, 2);
      }
      return;
    default:
      Fail("dtype", std::string("cannot convert F32 to ") + DTypeName(dtype));
  }
}

}  // namespace kvfold
