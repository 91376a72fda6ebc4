#include "formats/dtype.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "formats/error.h"

using namespace kvfold;

TEST_CASE("dtype names and sizes round-trip", "[dtype]") {
  for (const char* name : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL",
                           "F8_E4M3", "F8_E5M2"}) {
    auto d = ParseDType(name);
    REQUIRE(d.has_value());
    CHECK(std::string(DTypeName(*d)) == name);
  }
  CHECK_FALSE(ParseDType("F99").has_value());
  CHECK_FALSE(ParseDType("f32").has_value());
  CHECK(DTypeSize(DType::kBF16) == 2);
  CHECK(DTypeSize(DType::kF64) == 8);
}

TEST_CASE("bf16 conversion rounds to nearest even", "[dtype]") {
  CHECK(Bf16ToF32(0x3f80) == 1.0f);
  CHECK(F32ToBf16(1.0f) == 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties go to the even mantissa.
  CHECK(F32ToBf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
  CHECK(F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
  CHECK(std::isnan(Bf16ToF32(F32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(Bf16ToF32(F32ToBf16(std::numeric_limits<float>::infinity()))));
}

TEST_CASE("a block of bf16 converts as each value alone, from any byte offset", "[dtype]") {
  // Every bit pattern, stored one byte past an aligned start: the block loop (vectorized) must
  // give each value's bits as the one-value conversion does, NaN payloads included.
  std::vector<std::uint8_t> bytes(2 * 65536 + 1);
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    std::memcpy(bytes.data() + 1 + 2 * h, &bits, 2);
  }
  std::vector<float> block(65536);
  ConvertToF32(DType::kBF16, bytes.data() + 1, block.size(), block.data());
  std::size_t differ = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float one = Bf16ToF32(static_cast<std::uint16_t>(h));
    differ += std::memcmp(&one, &block[h], 4) != 0;
  }
  CHECK(differ == 0);
  CHECK(block[0x3f80] == 1.0f);
  CHECK(block[0xc040] == -3.0f);
}

TEST_CASE("f16 conversion covers normals, subnormals, overflow", "[dtype]") {
  CHECK(F16ToF32(0x3c00) == 1.0f);
  CHECK(F16ToF32(0xc000) == -2.0f);
  CHECK(F16ToF32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(F16ToF32(0x7bff) == 65504.0f);               // largest finite
  CHECK(F32ToF16(65504.0f) == 0x7bff);
  CHECK(F32ToF16(65520.0f) == 0x7c00);  // rounds up to inf
  CHECK(F32ToF16(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(F32ToF16(std::ldexp(1.0f, -26)) == 0x0000);  // below half the smallest subnormal
  // Every finite half survives half -> float -> half.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // inf/NaN
    REQUIRE(F32ToF16(F16ToF32(static_cast<std::uint16_t>(h))) == h);
  }
}

TEST_CASE("ConvertToF32 reads unaligned data and rejects integer types", "[dtype]") {
  std::uint8_t buf[9];
  const float v[2] = {1.5f, -3.25f};
  std::memcpy(buf + 1, v, 8);  // deliberately misaligned
  float out[2];
  ConvertToF32(DType::kF32, buf + 1, 2, out);
  CHECK(out[0] == 1.5f);
  CHECK(out[1] == -3.25f);
  CHECK_THROWS_AS(ConvertToF32(DType::kI32, buf, 1, out), Error);
}

TEST_CASE("values a dtype cannot hold are found and named", "[dtype]") {
  const float ok[] = {1.0f, -65504.0f, 3e38f};
  CHECK_FALSE(FindUnrepresentable(DType::kF16, ok, 2));
  CHECK_FALSE(FindUnrepresentable(DType::kBF16, ok, 3));
  CHECK_FALSE(FindUnrepresentable(DType::kF32, ok, 3));
  const float big[] = {1.0f, 1e6f};  // a decode coefficient F16 turns into inf
  CHECK(FindUnrepresentable(DType::kF16, big, 2).value() ==
        "element 1 is 1000000.000000 (beyond F16's range of 65504)");
  const float max_f32 = std::numeric_limits<float>::max();  // rounds up to BF16 inf
  CHECK(FindUnrepresentable(DType::kBF16, &max_f32, 1).value().find("beyond the dtype's range") !=
        std::string::npos);
  const float nan[] = {0.0f, std::nanf("")};
  CHECK(FindUnrepresentable(DType::kF32, nan, 2).value() == "element 1 is nan (not finite)");
}
