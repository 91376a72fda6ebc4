// KvCachePolicy: what the reference forward pass asks of a decode-time cache policy. The forward
// pass is parallel over tokens, but a policy's decisions for layer l depend only on that layer's
// rotated q/k/v, which the parallel pass computes exactly as sequential decoding would as long as
// every lower layer applied the same policy. So any policy reduces to "which cached keys each
// query reads" per (sequence, KV head), and the whole window still runs in one batched pass.
// LibTorch-free.
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime_check/attention_cpu.h"

namespace kvfold {

// What query i reads of cached token j, per (layer, sequence, KV head): a bit set.
enum CacheCode : std::uint8_t {
  kCacheHidden = 0,      // evicted (or not yet cached)
  kCacheVisible = 1,     // read
  kCacheQuantKey = 2,    // ... with the key from the policy's stored (quantized) copy
  kCacheQuantValue = 4,  // ... with the value from the stored copy
};

// Where a policy writes one (sequence, KV head): codes [T, T] (row = query), and the stored
// copies of keys and values [T, d] (only when the policy quantizes the layer), with each stored
// key's score extras [T, ScoreExtras] (only when the policy has them).
struct HeadCacheOut {
  std::uint8_t* codes = nullptr;
  float* keys = nullptr;
  float* values = nullptr;
  float* key_extras = nullptr;
};

// Tokens a cache that holds at most `keep` of what it has seen may keep after `seen` tokens:
// ceil(keep * seen), at least 1 (the tolerance absorbs keep * seen landing a hair above an
// integer in floating point).
inline std::int64_t RatioCapacity(double keep, std::int64_t seen) {
  const auto c = static_cast<std::int64_t>(std::ceil(keep * static_cast<double>(seen) - 1e-9));
  return c > 1 ? c : 1;
}

class KvCachePolicy {
 public:
  virtual ~KvCachePolicy() = default;

  // True when every head of `layer` keeps its full, full-precision cache (nothing is computed).
  virtual bool Untouched(int layer) const = 0;

  // True when the policy stores quantized keys/values for `layer` (HeadCacheOut keys/values).
  virtual bool Quantizes(int layer) const {
    (void)layer;
    return false;
  }

  // Fills `out` for KV head `g` of batch row `b`. `qkv` holds the layer's rotated rows
  // (QkvLayout); `sequence` is the row's global index in the evaluation (seeds must not depend
  // on batching). Causality is the policy's job: codes for j > i must be kCacheHidden.
  virtual void HeadCache(int layer, const float* qkv, const QkvLayout& layout, std::int64_t b,
                         std::int64_t g, std::int64_t sequence, const HeadCacheOut& out) const = 0;

  // The precision a runtime reads stored keys with: rounds `rows` query rows of `d` values in
  // place (llama.cpp converts each query row to its K type's dot-product type). Default: none.
  virtual bool RoundsQueries(int layer) const {
    (void)layer;
    return false;
  }
  // `extras` [rows, ScoreExtras]: each row's score extras (when the policy has them).
  virtual void RoundQueries(int layer, float* q, std::int64_t rows, std::int64_t d,
                            float* extras) const {
    (void)layer, (void)q, (void)rows, (void)d, (void)extras;
  }
  // Terms a runtime adds to a score against a stored key beyond the dot product of the rounded
  // query and the stored key (llama.cpp's q8_1 block sums against q4_1/q5_1 keys): the score is
  // dot(q, k) + dot(query extras, key extras), both ScoreExtras(layer, d) long. Default: none.
  virtual std::int64_t ScoreExtras(int layer, std::int64_t d) const {
    (void)layer, (void)d;
    return 0;
  }

  // Mean storage bits per KV element over decode steps i in [from, tokens), relative to the
  // full cache of i + 1 tokens (evicted tokens count 0 bits; the full cache is 16), with the
  // quantization scales counted. The average over layers and heads.
  virtual double AverageBits(std::int64_t tokens, std::int64_t from,
                             std::int64_t head_dim) const = 0;
};

}  // namespace kvfold
