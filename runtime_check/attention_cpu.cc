// Built with -O3 -mavx2 -mfma (see CMakeLists.txt) so the loops below vectorize; called only
// after CpuHasAttentionKernels() confirmed the instructions exist.
#include "runtime_check/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime_check/kv_cache_policy.h"

namespace kvfold {
namespace {

// e^x for x <= 0 to ~2 ulp: 2^n * e^r with n = round(x / ln 2), |r| <= ln2 / 2, and a degree-6
// Taylor polynomial for e^r. Written branch-free so the compiler vectorizes a loop of it.
inline float ExpNonPositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // Cody-Waite split of ln 2
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace

bool CpuHasAttentionKernels() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

void ApplyRopeInPlace(float* qkv, const QkvLayout& L, const float* cos, const float* sin,
                      std::int64_t first_row, std::int64_t last_row) {
  const std::int64_t d = L.head_dim, half = d / 2, rotated = L.heads + L.kv_heads;
  for (std::int64_t row = first_row; row < last_row; ++row) {
    const float* c = cos + (row % L.tokens) * half;
    const float* s = sin + (row % L.tokens) * half;
    float* base = qkv + row * L.row();
    for (std::int64_t h = 0; h < rotated; ++h) {
      float* x1 = base + h * d;
      float* x2 = x1 + half;
      for (std::int64_t j = 0; j < half; ++j) {
        const float a = x1[j], b = x2[j];
        x1[j] = a * c[j] - b * s[j];
        x2[j] = b * c[j] + a * s[j];
      }
    }
  }
}

namespace {

// The stored-key scores of query (b, i, head h) gain dot(query extras, key extras) per key.
void AddScoreExtras(const CacheLayer& cache, std::int64_t b, std::int64_t T, std::int64_t H,
                    std::int64_t pair, std::int64_t h, std::int64_t i, std::int64_t lo,
                    std::int64_t n, float scale, float* sq) {
  const std::int64_t E = cache.extras;
  const float* qe = cache.query_extras + ((b * T + i) * H + h) * E;
  for (std::int64_t j = 0; j < n; ++j) {
    const float* ke = cache.key_extras + (pair * T + lo + j) * E;
    float extra = 0;
    for (std::int64_t e = 0; e < E; ++e) extra += qe[e] * ke[e];
    sq[j] += extra * scale;
  }
}

}  // namespace

void CausalAttention(const float* qkv, const QkvLayout& L, float scale, std::int64_t sliding_window,
                     const CacheLayer* cache, float* ctx, std::int64_t first, std::int64_t last) {
  const std::int64_t T = L.tokens, d = L.head_dim, H = L.heads, KV = L.kv_heads;
  const std::int64_t group = H / KV, row = L.row(), ctx_row = H * d;
  const bool stored_keys = cache && cache->keys, stored_values = cache && cache->values;
  std::vector<float> keys_t(static_cast<std::size_t>(d * T));  // K^T of one (b, g): [d, T]
  std::vector<float> stored_t(stored_keys ? static_cast<std::size_t>(d * T) : 0);
  std::vector<float> p(static_cast<std::size_t>(T)),
      ps(stored_keys ? static_cast<std::size_t>(T) : 0);
  std::vector<float> acc(static_cast<std::size_t>(d));
  for (std::int64_t pair = first; pair < last; ++pair) {
    const std::int64_t b = pair / KV, g = pair % KV;
    const float* rows = qkv + b * T * row;
    // Transposed keys make each score row a sum of d contiguous, vectorizable axpys.
    for (std::int64_t t = 0; t < T; ++t) {
      const float* k = rows + t * row + (H + g) * d;
      for (std::int64_t c = 0; c < d; ++c) keys_t[c * T + t] = k[c];
      if (stored_keys) {
        const float* kq = cache->keys + (pair * T + t) * d;
        for (std::int64_t c = 0; c < d; ++c) stored_t[c * T + t] = kq[c];
      }
    }
    for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (std::int64_t i = 0; i < T; ++i) {
        const std::int64_t lo =
            sliding_window > 0 ? std::max<std::int64_t>(0, i - sliding_window + 1) : 0;
        const std::int64_t n = i + 1 - lo;
        const float* q = rows + i * row + h * d;
        const std::uint8_t* code = cache ? cache->codes + (pair * T + i) * T + lo : nullptr;
        float* s = p.data();
        std::fill(s, s + n, 0.0f);
        for (std::int64_t c = 0; c < d; ++c) {
          const float qc = q[c] * scale;
          const float* kt = keys_t.data() + c * T + lo;
          for (std::int64_t j = 0; j < n; ++j) s[j] += qc * kt[j];
        }
        if (stored_keys) {  // scores against the stored keys, taken where the code says so
          float* sq = ps.data();
          std::fill(sq, sq + n, 0.0f);
          const float* qs = cache->queries ? cache->queries + (b * T + i) * ctx_row + h * d : q;
          for (std::int64_t c = 0; c < d; ++c) {
            const float qc = qs[c] * scale;
            const float* kt = stored_t.data() + c * T + lo;
            for (std::int64_t j = 0; j < n; ++j) sq[j] += qc * kt[j];
          }
          if (cache->extras > 0) AddScoreExtras(*cache, b, T, H, pair, h, i, lo, n, scale, sq);
          for (std::int64_t j = 0; j < n; ++j) s[j] = (code[j] & kCacheQuantKey) ? sq[j] : s[j];
        }
        // The plain causal loops stay branch-free (vectorized); the cache variants skip hidden
        // cells and pick stored values. With nothing hidden both give the same bits.
        float sum = 0;
        if (code == nullptr) {
          float m = s[0];
          for (std::int64_t j = 1; j < n; ++j) m = std::max(m, s[j]);
          for (std::int64_t j = 0; j < n; ++j) {
            s[j] = ExpNonPositive(s[j] - m);
            sum += s[j];
          }
        } else {
          float m = -std::numeric_limits<float>::infinity();
          for (std::int64_t j = 0; j < n; ++j) m = std::max(m, code[j] ? s[j] : m);
          for (std::int64_t j = 0; j < n; ++j) {
            s[j] = code[j] ? ExpNonPositive(s[j] - m) : 0.0f;
            sum += s[j];
          }
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::int64_t j = 0; j < n; ++j) {
          const float* v = rows + (lo + j) * row + (H + KV + g) * d;
          if (stored_values && (code[j] & kCacheQuantValue))
            v = cache->values + (pair * T + lo + j) * d;
          const float w = s[j];
          for (std::int64_t c = 0; c < d; ++c) acc[c] += w * v[c];
        }
        float* out = ctx + (b * T + i) * ctx_row + h * d;
        const float inv = 1.0f / sum;
        for (std::int64_t c = 0; c < d; ++c) out[c] = acc[c] * inv;
      }
    }
  }
}

}  // namespace kvfold
