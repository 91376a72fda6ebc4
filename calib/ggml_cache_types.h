// llama.cpp's KV-cache types (`-ctk` / `-ctv`), as ggml stores a row of K or V: f16, bf16, and
// the block types q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl (blocks of 32 values along head_dim with
// an f16 scale, and for _1 types an f16 minimum). Quantize writes ggml's own block bytes by
// ggml's reference formulas (ggml-quants.c, `quantize_row_*_ref`: the scale is rounded to f16
// for storage but the codes are computed with the unrounded one); Dequantize reads them back.
// tests/calib/ggml_cache_types_test.cc compares both with llama.cpp's own libggml-base.
// LibTorch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvfold {

enum class GgmlCacheType { kF16, kBF16, kQ8_0, kQ5_1, kQ5_0, kQ4_1, kQ4_0, kIQ4_NL };

// "q8_0" -> kQ8_0 (llama.cpp's -ctk spelling); nullopt for another name.
std::optional<GgmlCacheType> ParseGgmlCacheType(const std::string& name);
const char* GgmlCacheTypeName(GgmlCacheType type);
// Elements per block (32, or 1 for f16/bf16) and bytes per block.
std::size_t GgmlBlockSize(GgmlCacheType type);
std::size_t GgmlBlockBytes(GgmlCacheType type);
// Storage bits per element (q8_0: 34 bytes / 32 values = 8.5).
double GgmlBitsPerElement(GgmlCacheType type);

// `n` values (a multiple of the block size) to ggml's bytes, and back.
std::vector<std::uint8_t> GgmlQuantize(GgmlCacheType type, const float* x, std::size_t n);
void GgmlDequantize(GgmlCacheType type, const std::uint8_t* bytes, std::size_t n, float* y);
// Both: what a value reads back as after llama.cpp cached it.
void GgmlRoundTrip(GgmlCacheType type, float* x, std::size_t n);

// A query row as ggml's CPU flash attention reads it against keys of `key_type`: converted to
// that type's dot-product type (f16 and bf16 to themselves; every block type to 8-bit blocks of
// 32, q8_0 or q8_1, whose values agree), as the x86 build does it (scale 127 / max|x|, codes
// rounded half to even).
//
// Keys with a minimum (q4_1, q5_1) are read against q8_1 blocks, whose dot product ggml forms
// as d_k d_q sum(c_k c_q) + m_k s_q, with s_q = d * sum(c_q) rounded to f16: not the exact
// product of the two dequantized rows. The difference is one term per block, m_k (s_q - d_q
// sum(c_q)): GgmlScoreExtras(key_type, n) terms per row (0 for the other types), the query's
// factors written to `extras` by GgmlRoundQuery and the key's (its block minima) by
// GgmlKeyExtras. A score is then dot(rounded q, stored k) + dot(query extras, key extras).
void GgmlRoundQuery(GgmlCacheType key_type, float* q, std::size_t n, float* extras = nullptr);
std::size_t GgmlScoreExtras(GgmlCacheType key_type, std::size_t n);
// A key row's extras: the f16 minimum of each block, from its ggml bytes.
void GgmlKeyExtras(GgmlCacheType key_type, const std::uint8_t* bytes, std::size_t n, float* extras);

}  // namespace kvfold
