// Element types of checkpoint tensors (safetensors spelling) and conversions to/from float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvfold {

enum class DType {
  kF64,
  kF32,
  kF16,
  kBF16,
  kI64,
  kI32,
  kI16,
  kI8,
  kU64,
  kU32,
  kU16,
  kU8,
  kBool,
  kF8E4M3,
  kF8E5M2
};

// "F32" -> kF32; nullopt for a name safetensors does not define.
std::optional<DType> ParseDType(std::string_view name);
const char* DTypeName(DType dtype);
std::size_t DTypeSize(DType dtype);
// True for the types kvfold computes with (F32, F16, BF16).
bool IsFloatingCompute(DType dtype);

float Bf16ToF32(std::uint16_t bits);
std::uint16_t F32ToBf16(float value);  // round to nearest even, NaN stays NaN
float F16ToF32(std::uint16_t bits);
std::uint16_t F32ToF16(float value);  // round to nearest even, overflow to inf

// Converts `count` elements of `src` (in `dtype`, any alignment) to float32 in `dst`.
// Throws Error for a type that is not F32/F16/BF16.
void ConvertToF32(DType dtype, const void* src, std::size_t count, float* dst);
// The first element of `src` that is not finite, or whose magnitude overflows `dtype` (F16 above
// 65504, BF16 above its largest finite value), as "element i is X (why)"; nullopt if all fit.
std::optional<std::string> FindUnrepresentable(DType dtype, const float* src, std::size_t count);
// Converts float32 `src` into `dtype` bytes at `dst` (F32/F16/BF16 only).
void ConvertFromF32(DType dtype, const float* src, std::size_t count, void* dst);

}  // namespace kvfold
