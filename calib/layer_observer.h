// LayerObserver: how calibration watches the reference forward pass without a second copy of the
// model code. The observer says which quantities it wants for each layer ("ask"), and the forward
// pass hands it CPU float32 views of exactly those ("collect"), valid only during Observe().
#pragma once

#include <cstdint>
#include <vector>

namespace kvfold {

struct FloatView {
  const float* data = nullptr;  // contiguous, row-major; null when not captured
  std::vector<std::int64_t> shape;
  std::int64_t size() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return data ? n : 0;
  }
};

// Shapes are token-major: row (b, t) holds every head of token t of sequence b, so a capture
// reshaped to [B * T, heads * d] is the matrix whose second moment calibration needs.
enum CaptureBits : unsigned {
  kCaptureAttnInput = 1u << 0,      // h after input_layernorm        [B, T, D]
  kCaptureQueryPreRope = 1u << 1,   // queries before RoPE            [B, T, H, d]
  kCaptureQueryPostRope = 1u << 2,  // queries after RoPE             [B, T, H, d]
  kCaptureKeyPreRope = 1u << 3,     // keys before RoPE               [B, T, KV, d]
  kCaptureKeyPostRope = 1u << 4,    // keys after RoPE                [B, T, KV, d]
  kCaptureValue = 1u << 5,          // values                         [B, T, KV, d]
  // The attention context, o_proj's input (the forward then runs attention even when it only
  // observes the layer)                                                    [B, T, H d]
  kCaptureContext = 1u << 6,
  kCaptureResidual = 1u << 7,  // the residual stream entering the layer      [B, T, D]
};

struct AttentionCapture {
  int layer = 0;
  // Tells batches apart: the first sequence of the batch in its run. A sweep shows every batch
  // one layer before the next layer, so per-batch state is keyed by it.
  std::int64_t sequence = 0;
  FloatView attn_input;
  FloatView query_pre_rope;
  FloatView query_post_rope;
  FloatView key_pre_rope;
  FloatView key_post_rope;
  FloatView value;
  FloatView context;
  FloatView residual;
};

class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  // CaptureBits wanted for `layer` (0 = nothing, and no copy is made).
  virtual unsigned Wants(int layer) const = 0;
  virtual void Observe(const AttentionCapture& capture) = 0;
};

}  // namespace kvfold
