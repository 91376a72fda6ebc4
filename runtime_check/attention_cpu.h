// Fused CPU kernels for the attention block of the reference forward: RoPE applied in place to
// the stacked q/k/v projections, and causal softmax attention that touches only the visible
// half of the score matrix. LibTorch-free; compiled for AVX2+FMA and used only where the CPU
// has both (CpuHasAttentionKernels), else the forward pass falls back to ATen ops.
#pragma once

#include <cmath>
#include <cstdint>

namespace kvfold {

// Layout shared by both kernels: `qkv` is row-major [B * T, (H + 2 KV) * d]; row b*T + t holds
// the H query heads, then the KV key heads, then the KV value heads of token t of sequence b.
struct QkvLayout {
  std::int64_t batch = 0, tokens = 0;  // B, T
  std::int64_t heads = 0, kv_heads = 0, head_dim = 0;
  double score_scale = 0;  // what scores are multiplied by (Gemma's); 0: head_dim^-1/2
  std::int64_t row() const { return (heads + 2 * kv_heads) * head_dim; }
  double ScoreScale() const {
    return score_scale > 0 ? score_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
  }
};

bool CpuHasAttentionKernels();

// Rotates the query and key heads of rows [first_row, last_row) in place (rotate_half layout:
// pair j = channels j and j + d/2). `cos`/`sin` are [T, d/2]; a row's position is row % T.
void ApplyRopeInPlace(float* qkv, const QkvLayout& layout, const float* cos, const float* sin,
                      std::int64_t first_row, std::int64_t last_row);

// Causal attention for the (sequence, KV head) pairs [first, last) (pair = b * KV + g): writes
// softmax(scale * q k^T + causal mask) v for the query heads that read KV head g into `ctx`,
// row-major [B * T, H * d]. `sliding_window` > 0 also hides keys at distance >= the window.
// `cache` (null = the full cache, everything causal) comes from a cache policy
// (runtime_check/kv_cache_policy.h). Without hidden or quantized cells it gives bit-identical
// results to no cache.
struct CacheLayer {
  const std::uint8_t* codes = nullptr;  // [B, KV, T, T] CacheCode bits
  const float* keys = nullptr;          // [B, KV, T, d] stored keys (or null: none quantized)
  const float* values = nullptr;        // [B, KV, T, d] stored values (or null)
  // [B * T, H * d] the queries scores against stored keys are computed with (or null: as is).
  const float* queries = nullptr;
  // Score extras (KvCachePolicy::ScoreExtras): [B * T, H * extras] and [B, KV, T, extras].
  std::int64_t extras = 0;
  const float* query_extras = nullptr;
  const float* key_extras = nullptr;
};
void CausalAttention(const float* qkv, const QkvLayout& layout, float scale,
                     std::int64_t sliding_window, const CacheLayer* cache, float* ctx,
                     std::int64_t first, std::int64_t last);

}  // namespace kvfold
