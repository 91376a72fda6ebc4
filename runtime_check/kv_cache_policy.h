// KvCachePolicy: what the reference forward pass asks of a decode-time cache policy. The forward
// pass is parallel over tokens, but a policy's decisions for layer l depend only on that layer's
// rotated q/k/v, which the parallel pass computes exactly as sequential decoding would as long as
// every lower layer applied the same policy. So any policy reduces to "which cached keys each
// query reads" per (sequence, KV head), and the whole window still runs in one batched pass.
// LibTorch-free.
#pragma once

#include <cstdint>

#include "runtime_check/attention_cpu.h"

namespace kvfold {

class KvCachePolicy {
 public:
  virtual ~KvCachePolicy() = default;

  // True when every head of `layer` keeps its full cache (no visibility is computed).
  virtual bool Untouched(int layer) const = 0;

  // Fills visible[i * T + j] (T = layout.tokens) with 1 when query i reads key j of KV head `g`
  // of batch row `b`, else 0. `qkv` holds the layer's rotated rows (QkvLayout); `sequence` is
  // the row's global index in the evaluation (seeds must not depend on batching). Causality is
  // the policy's job: j > i must be 0.
  virtual void HeadVisibility(int layer, const float* qkv, const QkvLayout& layout, std::int64_t b,
                              std::int64_t g, std::int64_t sequence, std::uint8_t* visible) const = 0;
};

}  // namespace kvfold
